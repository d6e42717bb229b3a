//! Name validation: usernames and workspace names follow DNS-label rules, since a
//! workspace name becomes part of an SSH host name (`tether.<name>`).

use super::error::ApiError;

/// Checks a DNS label: 1–63 of `a-z 0-9 -`, starting and ending with a letter or digit.
pub fn validate(kind: &str, name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!("Invalid {kind} name {name:?}: {why}."))
            .with_detail("Names use lowercase letters, digits and hyphens (1-63 characters), and start and end with a letter or digit.")
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 63 {
        return Err(bad("it is longer than 63 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        if c.is_ascii_uppercase() {
            return Err(bad("uppercase letters are not allowed"));
        }
        return Err(bad(&format!("the character {c:?} is not allowed")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("it must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn dns_label_rules() {
        for ok in ["dev", "a", "my-ws-2", &"a".repeat(63)] {
            assert!(validate("workspace", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-dev",
            "dev-",
            "Dev",
            "dev.box",
            "dev box",
            "dév",
            &"a".repeat(64),
        ] {
            let e = validate("workspace", bad).expect_err(bad);
            assert!(
                e.message.starts_with("Invalid workspace name"),
                "{}",
                e.message
            );
        }
    }
}
