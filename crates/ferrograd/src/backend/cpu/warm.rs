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

/// `rayon::join(a, b)`, except that the calling thread, once done with `a`, waits for `b` by
/// polling (and runs `b` itself if no other thread took it) instead of going to sleep: rayon
/// puts a waiting thread to sleep after a few dozen polls, and the futex call that wakes it
/// costs tens of microseconds on a virtual machine, while the two halves of a product often
/// end that far apart.
pub fn join_polling<RA: Send, RB: Send>(
    a: impl FnOnce() -> RA + Send,
    b: impl FnOnce() -> RB + Send,
) -> (RA, RB) {
    /// Marks `b` finished even when it panics, so the wait below ends (and the scope then
    /// passes the panic on).
    struct Finished<'a>(&'a AtomicBool);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    let mut rb = None;
    let ra = rayon::scope(|s| {
        s.spawn(|_| {
            let _finished = Finished(&done);
            rb = Some(b());
        });
        let ra = a();
        while !done.load(Ordering::Acquire) {
            match rayon::yield_now() {
                Some(Yield::Idle) => std::hint::spin_loop(),
                Some(Yield::Executed) => {}
                None => break, // not on a worker thread: the scope's own wait remains
            }
        }
        ra
    });
    (ra, rb.expect("the scope ran b to the end"))
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
    fn join_polling_returns_both_halves_and_passes_a_panic_on() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let _warm = KeepWarm::new();
            for n in [0u64, 1, 1000, 100_000] {
                let (a, b) = join_polling(|| (0..n).sum::<u64>(), || (0..n).map(|i| 2 * i).sum());
                assert_eq!((a, b), (n * n.saturating_sub(1) / 2, n * n.saturating_sub(1)));
            }
        });
        // A half that panics: the panic reaches the caller instead of the wait spinning on.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one.install(|| join_polling(|| 1, || -> u32 { panic!("b failed") }))
        }));
        assert!(caught.is_err());
    }

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
