//! Ranks as threads of one process, meeting at a rendezvous: the logic of data-parallel
//! training, tested without MPI.

use super::{check_parts, sum_in_rank_order, Collective};
use ferrograd::{Error, Result, Tensor};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One rank of a group of threads made by [`Threads::group`].
pub struct Threads {
    rank: usize,
    group: Arc<Group>,
}

struct Group {
    size: usize,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    /// Each rank's contribution to the collective under way, as f64 (exact for f32 and i64
    /// values below 2⁵³).
    slots: Vec<Vec<f64>>,
    arrived: usize,
    generation: u64,
    failed: Option<(usize, String)>,
}

impl Threads {
    /// `size` ranks, 0 to size − 1, to hand one to each thread.
    pub fn group(size: usize) -> Vec<Threads> {
        let state = State { slots: vec![Vec::new(); size], ..State::default() };
        let group = Arc::new(Group { size, state: Mutex::new(state), turn: Condvar::new() });
        (0..size).map(|rank| Threads { rank, group: group.clone() }).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.group.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every rank has arrived (after `deposit` put this rank's part in), or one
    /// has failed.
    fn rendezvous(&self, deposit: impl FnOnce(&mut State)) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        failed(&s)?;
        deposit(&mut s);
        s.arrived += 1;
        let generation = s.generation;
        if s.arrived == self.group.size {
            s.arrived = 0;
            s.generation += 1;
            self.group.turn.notify_all();
        } else {
            while s.generation == generation && s.failed.is_none() {
                s = self.group.turn.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        failed(&s)?;
        Ok(s)
    }
}

/// `values` (as f64) written over `out` in its dtype: copied, not summed, so that −0 stays −0.
fn write_values(values: Vec<f64>, out: &mut Tensor) -> Result<()> {
    let n = values.len();
    out.write_at(0, &Tensor::from_vec(values, &[n])?.to_dtype(out.dtype())?)
}

fn failed(s: &State) -> Result<()> {
    match &s.failed {
        Some((rank, message)) => {
            Err(Error::value("data-parallel training", format!("rank {rank} failed: {message}")))
        }
        None => Ok(()),
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.group.size
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let mine = t.to_vec_f64()?;
        let n = mine.len();
        let parts = {
            let s = self.rendezvous(|s| s.slots[self.rank] = mine)?;
            if let Some((r, p)) = s.slots.iter().enumerate().find(|(_, p)| p.len() != n) {
                return Err(Error::shape(
                    "all_reduce_sum",
                    format!("rank {} sums {n} values, rank {r} {}", self.rank, p.len()),
                ));
            }
            s.slots.clone()
        };
        // Nobody deposits the next collective's part before everyone has read this one's.
        drop(self.rendezvous(|_| {})?);
        sum_in_rank_order(&parts, t.dtype(), t)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let mine = if self.rank == root { t.to_vec_f64()? } else { Vec::new() };
        let theirs = {
            let s = self.rendezvous(|s| s.slots[self.rank] = mine)?;
            s.slots[root].clone()
        };
        drop(self.rendezvous(|_| {})?);
        if theirs.len() != t.numel() {
            return Err(Error::shape(
                "broadcast",
                format!(
                    "rank {root} sent {} values, rank {} expects {}",
                    theirs.len(),
                    self.rank,
                    t.numel()
                ),
            ));
        }
        write_values(theirs, t)
    }
    fn reduce_scatter_sum(&self, t: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        check_parts("reduce_scatter_sum", t, counts, (self.rank, self.group.size), out)?;
        let start: usize = counts[..self.rank].iter().sum();
        let mine = start..start + counts[self.rank];
        let values = t.to_vec_f64()?;
        let parts = {
            let s = self.rendezvous(|s| s.slots[self.rank] = values)?;
            if let Some((r, p)) = s.slots.iter().enumerate().find(|(_, p)| p.len() != t.numel()) {
                return Err(Error::shape(
                    "reduce_scatter_sum",
                    format!("rank {} sums {} values, rank {r} {}", self.rank, t.numel(), p.len()),
                ));
            }
            s.slots.iter().map(|p| p[mine.clone()].to_vec()).collect::<Vec<_>>()
        };
        drop(self.rendezvous(|_| {})?);
        sum_in_rank_order(&parts, t.dtype(), out)
    }
    fn all_gather(&self, part: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        check_parts("all_gather", out, counts, (self.rank, self.group.size), part)?;
        let values = part.to_vec_f64()?;
        let whole = {
            let s = self.rendezvous(|s| s.slots[self.rank] = values)?;
            if let Some((r, p)) = s.slots.iter().enumerate().find(|(r, p)| p.len() != counts[*r]) {
                return Err(Error::shape(
                    "all_gather",
                    format!(
                        "rank {r} gave {} values, counts {counts:?} expect {}",
                        p.len(),
                        counts[r]
                    ),
                ));
            }
            s.slots.concat()
        };
        drop(self.rendezvous(|_| {})?);
        write_values(whole, out)
    }
    fn barrier(&self) -> Result<()> {
        drop(self.rendezvous(|_| {})?);
        Ok(())
    }
    fn abort(&self, message: &str) {
        let mut s = self.lock();
        s.failed.get_or_insert((self.rank, message.to_string()));
        self.group.turn.notify_all();
    }
}
