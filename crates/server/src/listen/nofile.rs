//! The descriptor limit: raised from its soft value to the hard one at start, and the
//! connection cap derived from it, leaving room for everything else that needs a
//! descriptor (the database and its journal, STUN, DERP map fetches, the runtime).

/// The connection cap and its reserve for established connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The descriptor limit the caps come from.
    pub nofile: u64,
    /// Connections at most.
    pub cap: usize,
    /// Of those, kept for established connections.
    pub reserve: usize,
}

/// The caps for a descriptor limit: 64 plus a sixteenth of it left for other uses, and a
/// quarter of the rest kept for established connections.
pub fn caps_for(nofile: u64) -> Caps {
    // A limit of "infinity" would make a cap no other resource could back.
    let n = usize::try_from(nofile.min(1 << 20)).unwrap_or(1 << 20);
    let cap = n.saturating_sub(64 + n / 16).max(16);
    Caps {
        nofile,
        cap,
        reserve: cap / 4,
    }
}

/// Raises the soft descriptor limit to the hard limit and returns the caps for it. If
/// the limit cannot be read or changed, the caps are those of 1,024 descriptors.
pub fn raise() -> Caps {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => caps_for(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the descriptor limit; assuming 1024");
            caps_for(1024)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_headroom_and_a_reserve() {
        let c = caps_for(1024);
        assert_eq!((c.cap, c.reserve), (896, 224));
        let c = caps_for(1 << 20);
        assert_eq!(c.cap, (1 << 20) - 64 - (1 << 16));
        assert!(caps_for(u64::MAX).cap <= 1 << 20);
        assert_eq!(caps_for(10).cap, 16);
    }
}
