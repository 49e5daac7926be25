//! Keeping the thread pool's other workers awake between parallel ops. An idle rayon worker
//! goes to sleep after a few dozen polls, and waking it takes a futex call and, on a virtual
//! machine, tens of microseconds: longer than many of a training step's ops last (a W7 step
//! put the second worker to sleep about 120 times). While a [`KeepWarm`] lives, those workers
//! poll for work instead, as OpenMP's spin-wait does for PyTorch: W7 +9%, W3 +8%, W4 +6%,
//! W2 +3% (medians of 3–5), and context switches in a W7 run fell from 6,300 to 800.

use rayon::Yield;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// While alive, the current rayon pool's other workers poll for work instead of sleeping:
/// parallel ops start at once, at the price of those threads spinning between them. Create it
/// where a long computation starts (a training loop), inside `ThreadPool::install`.
///
/// ```
/// let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
/// pool.install(|| {
///     let _warm = ferrograd::KeepWarm::new();
///     // ... training steps: their parallel ops find the other workers awake
/// });
/// ```
pub struct KeepWarm {
    stop: Arc<AtomicBool>,
}

/// Pollers running now (the test checks that they all stop).
static POLLERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this worker is already polling (a second poller on it would only nest).
    static POLLING: Cell<bool> = const { Cell::new(false) };
}

impl KeepWarm {
    pub fn new() -> KeepWarm {
        let stop = Arc::new(AtomicBool::new(false));
        let owner = rayon::current_thread_index();
        let others = rayon::current_num_threads() - usize::from(owner.is_some());
        for _ in 0..others {
            spawn_poller(stop.clone(), owner);
        }
        KeepWarm { stop }
    }
}

impl Default for KeepWarm {
    fn default() -> KeepWarm {
        KeepWarm::new()
    }
}

impl Drop for KeepWarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn spawn_poller(stop: Arc<AtomicBool>, owner: Option<usize>) {
    rayon::spawn(move || poll(stop, owner));
}

/// Runs the pool's pending jobs as they appear until `stop`. The owner's thread must stay free
/// to return to its own work, so a poller it picks up (while waiting in a join) hands itself on.
fn poll(stop: Arc<AtomicBool>, owner: Option<usize>) {
    if stop.load(Ordering::Acquire) || POLLING.get() {
        return;
    }
    if owner.is_some() && rayon::current_thread_index() == owner {
        spawn_poller(stop, owner);
        return;
    }
    POLLING.set(true);
    POLLERS.fetch_add(1, Ordering::AcqRel);
    // After this many idle polls in a row (a pause in the computation, not a gap between two
    // ops), each poll also offers the core to the OS: other processes get it when they want
    // it, and the poll resumes at once when none does. (At 1,024, W7 measured 4% slower.)
    const SPINS: u32 = 1 << 16;
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(Yield::Executed) => idle = 0,
            Some(Yield::Idle) if idle < SPINS => {
                idle += 1;
                std::hint::spin_loop();
            }
            Some(Yield::Idle) => std::thread::yield_now(),
            None => break,
        }
    }
    POLLERS.fetch_sub(1, Ordering::AcqRel);
    POLLING.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::{Duration, Instant};

    #[test]
    fn parallel_work_runs_while_warm_and_the_pollers_stop_after() {
        let x: Vec<u64> = (0..1 << 20).collect();
        let want: u64 = x.iter().sum();
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let warm = KeepWarm::new();
                for _ in 0..200 {
                    // Joins nested in joins: the owner waits on halves the pollers run.
                    let got: u64 = x.par_chunks(1 << 12).map(|c| c.iter().sum::<u64>()).sum();
                    assert_eq!(got, want);
                }
                drop(warm);
            });
            let start = Instant::now();
            while POLLERS.load(Ordering::Acquire) > 0 {
                assert!(start.elapsed() < Duration::from_secs(10), "pollers still running");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
