//! Every password hash and check of the server goes through [`Passwords`]: argon2 runs
//! on a few threads of its own, one per core (each hash takes 19 MiB; with a blocking
//! thread per request, a flood of wrong passwords took the server to gigabytes, and
//! every thread's allocator arena kept its share), with a bounded queue that waits a
//! bounded time; and logins pass the per-account and per-source limits of [`throttle`]
//! first.

pub mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_store::StoreError;
use tether_store::secret::{self, HashMemory};
use tokio::sync::Semaphore;

use throttle::{Attempt, Limits, LoginThrottle, Outcome};

/// Why a password was not hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many failed logins for this account or from this source.
    #[error("too many login attempts; retry in {} s", retry_after.as_secs())]
    Limited {
        /// When to try again.
        retry_after: Duration,
    },
    /// All hashing slots are taken and the queue is full, or the wait was too long.
    #[error("the server is busy checking other passwords")]
    Busy,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] StoreError),
    /// The hashing thread failed.
    #[error("the password hashing task failed: {0}")]
    Task(String),
}

/// How much argon2 may run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Hashes at once.
    pub parallel: usize,
    /// Requests waiting for a slot; more are refused at once.
    pub queue: usize,
    /// How long one waits for a slot before it is refused.
    pub wait: Duration,
}

impl PoolLimits {
    /// One hash per core, a queue of 32 per core, waits of at most 10 s.
    pub fn for_this_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            parallel: cores,
            queue: 32 * cores,
            wait: Duration::from_secs(10),
        }
    }
}

/// How logins ended, counted for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginStats {
    /// The password was correct.
    pub succeeded: u64,
    /// The password was wrong, or there is no such user.
    pub failed: u64,
    /// Refused before checking by the per-account or per-source limits (429).
    pub rate_limited: u64,
    /// Not checked: the hashing queue was full or the wait too long (503), or the
    /// check itself failed.
    pub unchecked: u64,
}

/// Indexes of [`Passwords::logins`].
const SUCCEEDED: usize = 0;
const FAILED: usize = 1;
const RATE_LIMITED: usize = 2;
const UNCHECKED: usize = 3;

/// A job for a hashing thread, given the thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// The server's password hashing and login limits.
#[derive(Debug)]
pub struct Passwords {
    jobs: std::sync::mpsc::Sender<Job>,
    slots: Semaphore,
    waiting: AtomicUsize,
    pool: PoolLimits,
    throttle: Arc<Mutex<LoginThrottle>>,
    logins: [AtomicU64; 4],
}

impl Passwords {
    /// A pool with these limits.
    pub fn new(pool: PoolLimits, limits: Limits) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..pool.parallel.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tether-argon2-{i}"))
                .spawn(move || {
                    let mut memory = HashMemory::default();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job loses its answer, not the thread.
                        let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
                        let _ = std::panic::catch_unwind(run);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self {
            jobs: tx,
            slots: Semaphore::new(pool.parallel.max(1)),
            waiting: AtomicUsize::new(0),
            pool,
            throttle: Arc::new(Mutex::new(LoginThrottle::new(limits))),
            logins: Default::default(),
        }
    }

    /// How the logins so far ended.
    pub fn login_stats(&self) -> LoginStats {
        let get = |i: usize| self.logins[i].load(Ordering::Relaxed);
        LoginStats {
            succeeded: get(SUCCEEDED),
            failed: get(FAILED),
            rate_limited: get(RATE_LIMITED),
            unchecked: get(UNCHECKED),
        }
    }

    fn count_login(&self, which: usize) {
        self.logins[which].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` on a hashing thread once a slot is free.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut HashMemory) -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        // The count is a bound, not a ticket: a few racing callers may pass it at once.
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.pool.queue {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("password queue full");
            return Err(PasswordError::Busy);
        }
        let permit = tokio::time::timeout(self.pool.wait, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(Ok(_permit)) = permit else {
            tracing::debug!("waited too long for a password slot");
            return Err(PasswordError::Busy);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| PasswordError::Task("no hashing thread is running".into()))?;
        rx.await
            .map_err(|_| PasswordError::Task("the hashing thread stopped".into()))
    }

    /// Hashes a new password (user creation).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        Ok(self
            .run(move |m| secret::hash_password_with(&password, m))
            .await??)
    }

    /// Checks a login: `account` names who is logging in (the user's id, or the name
    /// tried when there is no such user), `phc` is the stored hash if there is a user.
    /// An unknown user costs a real verification too, so timing does not tell.
    pub async fn check_login(
        &self,
        source: IpAddr,
        account: &str,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        let attempt = self.begin(source, account).inspect_err(|_| {
            self.count_login(RATE_LIMITED);
        })?;
        let checked = self
            .run(move |m| match phc {
                Some(h) => secret::verify_password_with(&password, &h, m),
                None => {
                    let _ = secret::verify_password_with(&password, dummy_hash(), m);
                    false
                }
            })
            .await;
        let (outcome, counted) = match &checked {
            Ok(true) => (Outcome::Correct, SUCCEEDED),
            Ok(false) => (Outcome::Wrong, FAILED),
            Err(_) => (Outcome::Unchecked, UNCHECKED),
        };
        self.count_login(counted);
        attempt.finish(outcome);
        checked
    }

    fn begin(&self, source: IpAddr, account: &str) -> Result<AttemptGuard, PasswordError> {
        // A digest keeps the map's keys small whatever was typed.
        let key = secret::hash_token(&account.trim().to_lowercase());
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        match t.begin(source, key, Instant::now()) {
            Ok(attempt) => Ok(AttemptGuard {
                throttle: self.throttle.clone(),
                attempt: Some(attempt),
            }),
            Err(retry_after) => {
                tracing::debug!(%source, ?retry_after, "login rate-limited");
                Err(PasswordError::Limited { retry_after })
            }
        }
    }
}

/// Ends its attempt when dropped: as [`Outcome::Wrong`] unless told otherwise, so a
/// client that hangs up mid-check still spends its tokens.
struct AttemptGuard {
    throttle: Arc<Mutex<LoginThrottle>>,
    attempt: Option<Attempt>,
}

impl AttemptGuard {
    fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(a) = self.attempt.take() {
            let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
            t.finish(a, outcome, Instant::now());
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.end(Outcome::Wrong);
    }
}

/// A real argon2id hash of a random string, so unknown users cost a real verification.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| secret::hash_password(&secret::new_token()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn pool(parallel: usize, queue: usize, wait: Duration) -> Passwords {
        Passwords::new(
            PoolLimits {
                parallel,
                queue,
                wait,
            },
            Limits::default(),
        )
    }

    #[tokio::test]
    async fn at_most_parallel_run_and_the_queue_is_bounded() {
        let p = Arc::new(pool(2, 3, Duration::from_secs(30)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (p, running, peak, rx) =
                (p.clone(), running.clone(), peak.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                p.run(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = rx.lock().map(|rx| rx.recv());
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Two run, three wait: the queue is full now.
        while p.waiting.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(p.run(|_| ()).await, Err(PasswordError::Busy)));
        for _ in 0..5 {
            release_tx.send(()).expect("release");
        }
        for t in tasks {
            t.await.expect("join").expect("ran");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wait_beyond_the_limit_is_busy() {
        let p = Arc::new(pool(1, 10, Duration::from_millis(50)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let p = p.clone();
            tokio::spawn(async move { p.run(move |_| rx.recv()).await })
        };
        while p.slots.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(p.run(|_| ()).await, Err(PasswordError::Busy)));
        tx.send(()).expect("release");
        holder.await.expect("join").expect("ran").expect("recv");
    }

    #[tokio::test]
    async fn logins_are_checked_and_limited() {
        let p = pool(2, 10, Duration::from_secs(30));
        let phc = secret::hash_password("right password").expect("hash");
        let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let ok = p.check_login(src, "alice", "right password".into(), Some(phc.clone()));
        assert!(ok.await.expect("checked"));
        for _ in 0..10 {
            let wrong = p.check_login(src, "ALICE ", "wrong".into(), Some(phc.clone()));
            assert!(!wrong.await.expect("checked"));
        }
        let limited = p
            .check_login(src, "alice", "right password".into(), Some(phc.clone()))
            .await;
        assert!(
            matches!(limited, Err(PasswordError::Limited { .. })),
            "{limited:?}"
        );
        // Another account from the same source is not.
        let other = p.check_login(src, "bob", "x".into(), None).await;
        assert!(!other.expect("checked"));
        let counted = LoginStats {
            succeeded: 1,
            failed: 11,
            rate_limited: 1,
            unchecked: 0,
        };
        assert_eq!(p.login_stats(), counted);
    }
}
