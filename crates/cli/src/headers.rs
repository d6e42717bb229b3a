//! `--header KEY=VALUE` and `--header-command CMD`: extra HTTP headers for every request
//! to the server (API, connection info, coordination, DERP at the server's origin), for
//! an access proxy in front of it. `TETHER_HEADER` holds a comma-separated list when no
//! `--header` is given; the command's `KEY=VALUE` output lines are added after them.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncReadExt;
use url::Url;

/// The environment variable `--header` falls back to.
pub const HEADER_ENV: &str = "TETHER_HEADER";
/// How long `--header-command` may run.
const COMMAND_WAIT: Duration = Duration::from_secs(30);
/// How much of its output is read, at most.
const COMMAND_OUTPUT_MAX: u64 = 64 * 1024;

/// One `KEY=VALUE`, as a header; `from` names where it came from, for the error.
pub fn parse(kv: &str, from: &str) -> Result<(HeaderName, HeaderValue)> {
    let Some((key, value)) = kv.split_once('=') else {
        bail!("{from} {kv:?} is not KEY=VALUE");
    };
    let name = HeaderName::from_bytes(key.trim().as_bytes())
        .map_err(|_| anyhow::anyhow!("{from}: {:?} is not a valid HTTP header name", key.trim()))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        anyhow::anyhow!("{from}: the value of header {name} is not a valid HTTP header value")
    })?;
    Ok((name, value))
}

/// The headers of `--header` (else `TETHER_HEADER`), then those `--header-command` prints.
pub async fn collect(
    flags: &[String],
    command: Option<&str>,
    url: Option<&Url>,
) -> Result<HeaderMap> {
    let mut out = HeaderMap::new();
    if flags.is_empty() {
        if let Ok(env) = std::env::var(HEADER_ENV) {
            for kv in env.split(',').filter(|s| !s.trim().is_empty()) {
                let (k, v) = parse(kv, HEADER_ENV)?;
                out.append(k, v);
            }
        }
    } else {
        for kv in flags {
            let (k, v) = parse(kv, "--header")?;
            out.append(k, v);
        }
    }
    if let Some(cmd) = command.filter(|c| !c.trim().is_empty()) {
        for (k, v) in run_command(cmd, url).await? {
            out.append(k, v);
        }
    }
    // Proxies' headers are usually credentials.
    for v in out.values() {
        if let Ok(v) = v.to_str() {
            crate::redact::secret(v);
        }
    }
    Ok(out)
}

/// Runs `sh -c CMD` (with `TETHER_URL` set when the server is known) and parses each
/// non-empty line of its output as `KEY=VALUE`.
async fn run_command(cmd: &str, url: Option<&Url>) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(u) = url {
        command.env("TETHER_URL", u.as_str());
    }
    let mut child = command
        .spawn()
        .context("could not run --header-command (is sh installed?)")?;
    let mut stdout = child
        .stdout
        .take()
        .context("could not read --header-command's output")?;
    let run = async {
        let mut text = Vec::new();
        (&mut stdout)
            .take(COMMAND_OUTPUT_MAX + 1)
            .read_to_end(&mut text)
            .await?;
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > COMMAND_OUTPUT_MAX {
            // Too much: killed on drop rather than waited for.
            return Ok((text, None));
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((text, Some(status)))
    };
    let (text, status) = match tokio::time::timeout(COMMAND_WAIT, run).await {
        Ok(r) => r.context("could not read --header-command's output")?,
        Err(_) => bail!(
            "--header-command did not finish within {}s",
            COMMAND_WAIT.as_secs()
        ),
    };
    let Some(status) = status else {
        bail!(
            "--header-command printed more than {} KiB",
            COMMAND_OUTPUT_MAX / 1024
        );
    };
    if !status.success() {
        bail!("--header-command failed ({status})");
    }
    let text = String::from_utf8(text).context("--header-command printed something not UTF-8")?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse(l, "--header-command printed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs() {
        let (k, v) = parse("X-Proxy-Auth=a=b c", "--header").expect("parse");
        assert_eq!(k, "x-proxy-auth");
        assert_eq!(v, "a=b c");
        let e = parse("nokey", "--header").expect_err("no =");
        assert_eq!(e.to_string(), "--header \"nokey\" is not KEY=VALUE");
        assert!(parse("bad name=1", "--header").is_err());
        assert!(parse("X=line\nbreak", "--header").is_err());
    }

    #[tokio::test]
    async fn the_command_adds_its_lines_after_the_flags() {
        let flags = vec!["A=1".to_string()];
        let h = collect(
            &flags,
            Some("printf 'B=2\\n\\nA=3\\n'; echo \"U=$TETHER_URL\""),
            Some(&Url::parse("http://127.0.0.1:9/").expect("url")),
        )
        .await
        .expect("collect");
        let a: Vec<&str> = h
            .get_all("a")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(h["b"], "2");
        assert_eq!(h["u"], "http://127.0.0.1:9/");
        let e = collect(&[], Some("echo oops"), None)
            .await
            .expect_err("not KEY=VALUE");
        assert!(e.to_string().contains("\"oops\" is not KEY=VALUE"), "{e}");
        let e = collect(&[], Some("exit 3"), None).await.expect_err("fails");
        assert!(e.to_string().contains("--header-command failed"), "{e}");
        let e = collect(&[], Some("yes A=1"), None)
            .await
            .expect_err("endless");
        assert!(e.to_string().contains("more than 64 KiB"), "{e}");
    }
}
