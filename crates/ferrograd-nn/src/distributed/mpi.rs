//! Ranks as MPI processes (Open MPI, through the `mpi` crate): `mpirun -np N ferrograd train …`.

use super::{Collective, Pending};
use ::mpi::collective::SystemOperation;
use ::mpi::environment::Threading;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ferrograd::{DType, Error, Result, Tensor};
use std::sync::{mpsc, Arc, Condvar, Mutex};

/// This process's rank in `MPI_COMM_WORLD`. MPI is finalized when it is dropped.
///
/// Calls are made one at a time, in the order they are asked for: a started all-reduce runs
/// on a thread of its own (Open MPI moves a collective on only inside a call, so a call must
/// be under way for it to overlap backward), and a blocking call first waits for the started
/// ones, so that every rank makes the same calls in the same order.
pub struct Mpi {
    calls: Arc<Mutex<Scratch>>,
    started: Arc<(Mutex<usize>, Condvar)>,
    worker: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
    rank: usize,
    size: usize,
    _universe: ::mpi::environment::Universe,
}

/// A started all-reduce: the tensor, and where its sum goes.
type Job = (Tensor, mpsc::Sender<Result<Tensor>>);

/// Where an all-reduce receives, kept from call to call: the gradient buckets are reduced
/// every step, and a fresh buffer of their size each time costs page faults.
#[derive(Default)]
struct Scratch {
    f32: Vec<f32>,
    f64: Vec<f64>,
    i64: Vec<i64>,
}

impl Mpi {
    /// Whether this process was started by an MPI launcher (`mpirun`, `srun`).
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    /// Joins the job; an error when MPI cannot start.
    pub fn init() -> Result<Mpi> {
        let (universe, level) = ::mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| Error::value("MPI", "cannot initialize MPI (already initialized?)"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let calls = Arc::new(Mutex::new(Scratch::default()));
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        // A library that cannot take calls from a second thread sums in the caller's.
        let worker = if level >= Threading::Serialized {
            Some(spawn_worker(calls.clone(), started.clone())?)
        } else {
            None
        };
        Ok(Mpi { calls, started, worker, rank, size, _universe: universe })
    }

    /// The guard that keeps calls one at a time, once every started all-reduce is done.
    fn turn(&self) -> std::sync::MutexGuard<'_, Scratch> {
        let (count, done) = &*self.started;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = done.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        drop(n);
        lock(&self.calls)
    }
}

fn lock(calls: &Mutex<Scratch>) -> std::sync::MutexGuard<'_, Scratch> {
    calls.lock().unwrap_or_else(|e| e.into_inner())
}

/// `t` summed over the ranks, in place. The world communicator is a handle to
/// `MPI_COMM_WORLD`, made per call: it is not `Send`.
fn sum_tensor(s: &mut Scratch, t: &mut Tensor) -> Result<()> {
    let world = SimpleCommunicator::world();
    match t.dtype() {
        DType::F32 => sum_into(&world, t.as_mut_slice::<f32>("all_reduce_sum")?, &mut s.f32),
        DType::F64 => sum_into(&world, t.as_mut_slice::<f64>("all_reduce_sum")?, &mut s.f64),
        DType::I64 => sum_into(&world, t.as_mut_slice::<i64>("all_reduce_sum")?, &mut s.i64),
    }
    Ok(())
}

/// The thread that sums started all-reduces, one at a time, in the order they were started.
fn spawn_worker(
    calls: Arc<Mutex<Scratch>>,
    started: Arc<(Mutex<usize>, Condvar)>,
) -> Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)> {
    let (send, jobs) = mpsc::channel::<Job>();
    let worker = std::thread::Builder::new()
        .name("mpi".into())
        .spawn(move || {
            for (mut t, reply) in jobs {
                // Counted down even if the call panics: blocking calls wait for the count.
                let _done = CountDown(&started);
                let result = sum_tensor(&mut lock(&calls), &mut t).map(|()| t);
                let _ = reply.send(result);
            }
        })
        .map_err(|e| Error::value("MPI", format!("cannot start its thread: {e}")))?;
    Ok((send, worker))
}

struct CountDown<'a>(&'a (Mutex<usize>, Condvar));

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        let (count, done) = self.0;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        done.notify_all();
    }
}

impl Drop for Mpi {
    /// The thread ends before MPI is finalized.
    fn drop(&mut self) {
        if let Some((send, worker)) = self.worker.take() {
            drop(send);
            let _ = worker.join();
        }
    }
}

/// `data` summed over the ranks, received in `scratch` and copied back (the `mpi` crate has
/// no `MPI_IN_PLACE`).
fn sum_into<T: Equivalence + Copy + Default>(
    world: &SimpleCommunicator,
    data: &mut [T],
    scratch: &mut Vec<T>,
) {
    if scratch.len() < data.len() {
        scratch.resize(data.len(), T::default());
    }
    let received = &mut scratch[..data.len()];
    world.all_reduce_into(&data[..], &mut received[..], SystemOperation::sum());
    data.copy_from_slice(received);
}

/// Counts as MPI takes them (C ints: their total too, as the displacements add up), or an
/// error naming `op`.
fn mpi_counts(op: &str, counts: &[usize]) -> Result<Vec<i32>> {
    if i32::try_from(counts.iter().sum::<usize>()).is_err() {
        return Err(Error::value(
            op,
            format!("counts {counts:?} exceed MPI's 2³¹ − 1 elements a call"),
        ));
    }
    Ok(counts.iter().map(|&n| n as i32).collect())
}

/// This rank's part (`counts[rank]` elements) of the sum over ranks of `send`.
fn reduce_scatter_into<T: Equivalence>(
    world: &SimpleCommunicator,
    send: &[T],
    counts: &[i32],
    recv: &mut [T],
) {
    use ::mpi::raw::AsRaw;
    let total: i32 = counts.iter().sum();
    let mine = counts[world.rank() as usize];
    assert!(counts.len() == world.size() as usize && send.len() == total as usize);
    assert!(recv.len() == mine as usize, "reduce_scatter_into: {} for {mine}", recv.len());
    // The `mpi` crate has only the equal-blocks form (MPI_Reduce_scatter_block).
    // SAFETY: `send` holds the counts' total and `recv` this rank's count of T (asserted);
    // the datatype is T's and `counts` has one entry per rank. Errors abort the job (MPI's
    // default handler), as in the `mpi` crate's own calls.
    unsafe {
        ::mpi::ffi::MPI_Reduce_scatter(
            send.as_ptr().cast(),
            recv.as_mut_ptr().cast(),
            counts.as_ptr(),
            T::equivalent_datatype().as_raw(),
            SystemOperation::sum().as_raw(),
            world.as_raw(),
        );
    }
}

/// Every rank's `part` (`counts[r]` elements from rank r) in rank order into `recv`.
fn gather_into<T: Equivalence>(
    world: &SimpleCommunicator,
    part: &[T],
    counts: &[i32],
    recv: &mut [T],
) {
    let total: i32 = counts.iter().sum();
    assert!(recv.len() == total as usize && part.len() == counts[world.rank() as usize] as usize);
    let displs: Vec<i32> =
        counts.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
    let mut partition = ::mpi::datatype::PartitionMut::new(recv, counts, &displs[..]);
    world.all_gather_varcount_into(part, &mut partition);
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        sum_tensor(&mut self.turn(), t)
    }
    fn start_all_reduce_sum(&self, mut t: Tensor) -> Result<Pending> {
        let Some((jobs, _)) = &self.worker else {
            self.all_reduce_sum(&mut t)?;
            return Ok(Pending::done(t));
        };
        let (reply, sum) = mpsc::channel();
        *self.started.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if jobs.send((t, reply)).is_err() {
            drop(CountDown(&self.started));
            return Err(Error::value("MPI", "its thread has ended"));
        }
        Ok(Pending(Box::new(move || {
            sum.recv().map_err(|_| Error::value("MPI", "its thread ended during an all-reduce"))?
        })))
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let _one_at_a_time = self.turn();
        let world = SimpleCommunicator::world();
        let root = world.process_at_rank(root as i32);
        match t.dtype() {
            DType::F32 => root.broadcast_into(t.as_mut_slice::<f32>("broadcast")?),
            DType::F64 => root.broadcast_into(t.as_mut_slice::<f64>("broadcast")?),
            DType::I64 => root.broadcast_into(t.as_mut_slice::<i64>("broadcast")?),
        }
        Ok(())
    }
    fn reduce_scatter_sum(&self, t: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        super::check_parts("reduce_scatter_sum", t, counts, (self.rank, self.size), out)?;
        let counts = mpi_counts("reduce_scatter_sum", counts)?;
        let _one_at_a_time = self.turn();
        let world = SimpleCommunicator::world();
        match t.dtype() {
            DType::F32 => reduce_scatter_into(
                &world,
                t.as_slice::<f32>("reduce_scatter_sum")?,
                &counts,
                out.as_mut_slice::<f32>("reduce_scatter_sum")?,
            ),
            DType::F64 => reduce_scatter_into(
                &world,
                t.as_slice::<f64>("reduce_scatter_sum")?,
                &counts,
                out.as_mut_slice::<f64>("reduce_scatter_sum")?,
            ),
            DType::I64 => reduce_scatter_into(
                &world,
                t.as_slice::<i64>("reduce_scatter_sum")?,
                &counts,
                out.as_mut_slice::<i64>("reduce_scatter_sum")?,
            ),
        }
        Ok(())
    }
    fn all_gather(&self, part: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        super::check_parts("all_gather", out, counts, (self.rank, self.size), part)?;
        let counts = mpi_counts("all_gather", counts)?;
        let _one_at_a_time = self.turn();
        let world = SimpleCommunicator::world();
        match part.dtype() {
            DType::F32 => gather_into(
                &world,
                part.as_slice::<f32>("all_gather")?,
                &counts,
                out.as_mut_slice::<f32>("all_gather")?,
            ),
            DType::F64 => gather_into(
                &world,
                part.as_slice::<f64>("all_gather")?,
                &counts,
                out.as_mut_slice::<f64>("all_gather")?,
            ),
            DType::I64 => gather_into(
                &world,
                part.as_slice::<i64>("all_gather")?,
                &counts,
                out.as_mut_slice::<i64>("all_gather")?,
            ),
        }
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        let _one_at_a_time = self.turn();
        SimpleCommunicator::world().barrier();
        Ok(())
    }
    /// Ends the whole job (`MPI_Abort`): the other ranks may be inside a collective that would
    /// otherwise wait for this one forever.
    fn abort(&self, message: &str) {
        eprintln!("error: rank {} of {} failed: {message}; ending the job", self.rank, self.size);
        // Not behind the guard: the thread may be inside a call that waits for a dead rank.
        SimpleCommunicator::world().abort(1);
    }
}
