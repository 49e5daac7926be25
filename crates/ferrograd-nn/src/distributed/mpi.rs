//! Ranks as MPI processes (Open MPI, through the `mpi` crate): `mpirun -np N ferrograd train …`.

use super::Collective;
use ::mpi::collective::SystemOperation;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ferrograd::{DType, Error, Result, Tensor};
use std::sync::Mutex;

/// This process's rank in `MPI_COMM_WORLD`. MPI is finalized when it is dropped. Calls are
/// made one at a time (MPI is initialized for one calling thread).
pub struct Mpi {
    calls: Mutex<Scratch>,
    rank: usize,
    size: usize,
    _universe: ::mpi::environment::Universe,
}

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
        let universe = ::mpi::initialize()
            .ok_or_else(|| Error::value("MPI", "cannot initialize MPI (already initialized?)"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Mpi { calls: Mutex::new(Scratch::default()), rank, size, _universe: universe })
    }

    /// The world communicator (a handle to `MPI_COMM_WORLD`, made per call: it is not `Send`)
    /// and the guard that keeps calls one at a time.
    fn world(&self) -> (std::sync::MutexGuard<'_, Scratch>, SimpleCommunicator) {
        (self.calls.lock().unwrap_or_else(|e| e.into_inner()), SimpleCommunicator::world())
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

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let (mut scratch, world) = self.world();
        let s = &mut *scratch;
        match t.dtype() {
            DType::F32 => sum_into(&world, t.as_mut_slice::<f32>("all_reduce_sum")?, &mut s.f32),
            DType::F64 => sum_into(&world, t.as_mut_slice::<f64>("all_reduce_sum")?, &mut s.f64),
            DType::I64 => sum_into(&world, t.as_mut_slice::<i64>("all_reduce_sum")?, &mut s.i64),
        }
        Ok(())
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let (_one_at_a_time, world) = self.world();
        let root = world.process_at_rank(root as i32);
        match t.dtype() {
            DType::F32 => root.broadcast_into(t.as_mut_slice::<f32>("broadcast")?),
            DType::F64 => root.broadcast_into(t.as_mut_slice::<f64>("broadcast")?),
            DType::I64 => root.broadcast_into(t.as_mut_slice::<i64>("broadcast")?),
        }
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.world().1.barrier();
        Ok(())
    }
    /// Ends the whole job (`MPI_Abort`): the other ranks may be inside a collective that would
    /// otherwise wait for this one forever.
    fn abort(&self, message: &str) {
        eprintln!("error: rank {} of {} failed: {message}; ending the job", self.rank, self.size);
        self.world().1.abort(1);
    }
}
