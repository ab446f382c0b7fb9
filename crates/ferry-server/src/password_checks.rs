//! argon2id verifications on a few long-lived threads of their own.
//!
//! One verification takes 19 MiB (the default cost) and a core for tens of milliseconds.
//! Run on tokio's blocking pool, a burst of logins spread them over up to 16 pool threads,
//! and glibc kept a 19 MiB arena on each: 300 MB of RSS that stayed after the burst. Here at
//! most `threads` run at once (which also keeps a core free for the sessions' I/O), each
//! always on the same thread, so the memory kept is `threads` x 19 MiB at most.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// The queue of verifications waiting for a thread (first come, first served).
#[derive(Debug)]
pub struct PasswordChecks {
    jobs: Mutex<Sender<Job>>,
}

impl PasswordChecks {
    /// Starts `threads` (at least one) worker threads; they end when this is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("ferry-argon2-{i}"))
                .spawn(move || work(&queue))?;
        }
        Ok(PasswordChecks {
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `check` on a worker thread and waits for its result without blocking the caller's
    /// thread; `None` only if the workers are gone.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(check());
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .ok()?;
        result.await.ok()
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is released as soon as a job is taken, so the others can take the next.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[tokio::test]
    async fn checks_run_on_the_workers_only_and_return_their_results() {
        let checks = PasswordChecks::new(2).unwrap();
        let mut names = HashSet::new();
        for i in 0..20u32 {
            let (n, name) = checks
                .run(move || (i * 2, std::thread::current().name().map(str::to_owned)))
                .await
                .unwrap();
            assert_eq!(n, i * 2);
            names.insert(name.unwrap());
        }
        assert!(names.len() <= 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("ferry-argon2-")));
    }

    #[tokio::test]
    async fn at_most_the_given_number_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let checks = Arc::new(PasswordChecks::new(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut waits = Vec::new();
        for _ in 0..10 {
            let (checks, running, most) = (checks.clone(), running.clone(), most.clone());
            waits.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            }));
        }
        for wait in waits {
            wait.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
