//! Gradient accumulation and data parallelism. A step's global batch is `accumulate`
//! micro-batches on each of the world's ranks (`data::Shard`); every micro-batch runs its own
//! forward (its own batch-norm statistics), and the step's gradient is that of the mean loss
//! over the global batch, Σ n_m·∇L_m / Σ n_m (n_m the micro-batch's size, L_m its mean loss):
//! the gradient one batch of all those samples would give, batch norm aside. Across ranks the
//! sums are all-reduced (`Collective`), so every rank applies the same update and weights and α
//! stay equal without being sent again.
//!
//! The world is one process (`Single`) unless the program set another (`set_world`, the
//! `distributed` feature's MPI world).

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::ops;

/// The processes of a data-parallel run.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sums over the ranks, in place.
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Rank 0's bytes on every rank, in place (every rank passes a buffer of the same size).
    fn broadcast(&self, buf: &mut [u8]) -> Result<()>;
}

/// One process: sums and broadcasts are the identity.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn broadcast(&self, _: &mut [u8]) -> Result<()> {
        Ok(())
    }
}

static WORLD: OnceLock<Arc<dyn Collective>> = OnceLock::new();

/// The world of this process (one process unless `set_world` said otherwise).
pub fn world() -> Arc<dyn Collective> {
    WORLD.get().cloned().unwrap_or_else(|| Arc::new(Single))
}

/// Sets the world, once, before any step; false if it was set already.
pub fn set_world(world: Arc<dyn Collective>) -> bool {
    WORLD.set(world).is_ok()
}

/// This process's rank among those of its machine (Open MPI's, Slurm's or MPICH's variable),
/// in a world of more than one process; 0 otherwise.
pub fn local_rank() -> usize {
    if world().size() == 1 {
        return 0;
    }
    ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Whether this process is the one that writes (rank 0).
pub fn is_writer() -> bool {
    world().rank() == 0
}

/// Sums `tensors` over the ranks: one all-reduce of all of them, through the host. The
/// identity (no copy) in a world of one.
pub fn all_reduce_sum(world: &dyn Collective, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
    if world.size() == 1 || tensors.is_empty() {
        return Ok(tensors.to_vec());
    }
    let device = tensors[0].device().clone();
    let dtype = tensors[0].dtype();
    let flat = Tensor::cat(&tensors.iter().map(|t| t.flatten_all()).collect::<Result<Vec<_>>>()?, 0)?;
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        // On the GPUs: NCCL, the data staying on the device.
        let summed = nccl::all_reduce_sum(world, &flat.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        return split_like(&summed, tensors);
    }
    let summed = match dtype {
        DType::F64 => {
            let mut v = flat.to_vec1::<f64>()?;
            world.all_reduce_f64(&mut v)?;
            Tensor::from_vec(v, flat.elem_count(), &Device::Cpu)?
        }
        _ => {
            let mut v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            world.all_reduce_f32(&mut v)?;
            Tensor::from_vec(v, flat.elem_count(), &Device::Cpu)?.to_dtype(dtype)?
        }
    }
    .to_device(&device)?;
    split_like(&summed, tensors)
}

/// `flat` cut into tensors of the shapes of `like`, in order.
fn split_like(flat: &Tensor, like: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(like.len());
    let mut at = 0;
    for t in like {
        let n = t.elem_count();
        out.push(flat.narrow(0, at, n)?.reshape(t.shape())?);
        at += n;
    }
    Ok(out)
}

/// Rank 0's values of `vars` on every rank (the start of a data-parallel run).
pub fn broadcast_vars(world: &dyn Collective, vars: &[Var]) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    for v in vars {
        let t = v.as_tensor();
        let mut bytes: Vec<u8> = match t.dtype() {
            DType::F64 => t.flatten_all()?.to_vec1::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => {
                t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        };
        world.broadcast(&mut bytes)?;
        let host = match t.dtype() {
            DType::F64 => {
                let v: Vec<f64> =
                    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
                Tensor::from_vec(v, t.shape(), &Device::Cpu)?
            }
            dt => {
                let v: Vec<f32> =
                    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect();
                Tensor::from_vec(v, t.shape(), &Device::Cpu)?.to_dtype(dt)?
            }
        };
        v.set(&host.to_device(t.device())?)?;
    }
    Ok(())
}

/// Whether `flag` is raised on any rank (every rank calls it at the same point).
pub fn any(world: &dyn Collective, flag: bool) -> Result<bool> {
    if world.size() == 1 {
        return Ok(flag);
    }
    let mut v = [f64::from(u8::from(flag))];
    world.all_reduce_f64(&mut v)?;
    Ok(v[0] > 0.0)
}

/// One micro-batch's forward: its mean loss, its number of correct predictions (a scalar
/// tensor, or the pair [top-1, top-5] of `nn::topk_counts`) and its size.
pub struct MicroOutput {
    pub loss: Tensor,
    pub correct: Tensor,
    pub n: usize,
}

/// The gradients of a step over its micro-batches and the world's ranks.
pub struct StepGrads {
    /// Per list of variables asked for, the gradient of the global mean loss (None where a
    /// variable got none).
    pub grads: Vec<Vec<Option<Tensor>>>,
    /// The global mean loss and correct count (scalars), and the global batch size.
    pub loss: Tensor,
    pub correct: Tensor,
    pub n: usize,
}

/// Runs `forward` on every micro-batch, backpropagates each loss and returns the gradients of
/// the global mean loss with respect to each list of `vars` (Σ n_m·g_m / Σ n_m over the
/// micro-batches of every rank). One micro-batch in a world of one returns its gradients
/// untouched.
pub fn step_grads<B>(
    micro: &[B],
    vars: &[&[Var]],
    mut forward: impl FnMut(&B) -> Result<MicroOutput>,
) -> Result<StepGrads> {
    let world = world();
    let single = micro.len() == 1 && world.size() == 1;
    let mut sums: Vec<Vec<Option<Tensor>>> = vars.iter().map(|v| vec![None; v.len()]).collect();
    let (mut loss_sum, mut correct_sum, mut n_local): (Option<Tensor>, Option<Tensor>, usize) = (None, None, 0);
    for b in micro {
        let out = forward(b)?;
        let store = out.loss.backward()?;
        let scale = out.n as f64;
        for (list, sum) in vars.iter().zip(sums.iter_mut()) {
            for (v, s) in list.iter().zip(sum.iter_mut()) {
                let Some(g) = store.get(v.as_tensor()) else { continue };
                let g = if single { g.clone() } else { (g * scale)? };
                *s = Some(ops::accumulate(s.take(), g, None)?);
            }
        }
        let l = if single { out.loss.detach() } else { (out.loss.detach() * scale)? };
        loss_sum = Some(ops::accumulate(loss_sum, l, None)?);
        correct_sum = Some(ops::accumulate(correct_sum, out.correct, None)?);
        n_local += out.n;
    }
    let (Some(loss_sum), Some(correct_sum)) = (loss_sum, correct_sum) else {
        candle_core::bail!("a step without micro-batches");
    };
    if single {
        return Ok(StepGrads { grads: sums, loss: loss_sum, correct: correct_sum, n: n_local });
    }
    // One all-reduce for every gradient, the loss, the correct count and the size.
    let mut flat: Vec<Tensor> = sums.iter().flatten().flatten().cloned().collect();
    let dtype = loss_sum.dtype();
    let device = loss_sum.device().clone();
    let count = Tensor::new(&[n_local as f64], &device)?.to_dtype(dtype)?;
    flat.push(loss_sum.reshape(1)?);
    let correct_shape = correct_sum.shape().clone();
    flat.push(correct_sum.to_dtype(dtype)?.flatten_all()?);
    flat.push(count);
    let reduced = all_reduce_sum(world.as_ref(), &flat)?;
    let k = reduced.len();
    let n = reduced[k - 1].to_dtype(DType::F64)?.to_vec1::<f64>()?[0].round() as usize;
    let inv = 1.0 / n.max(1) as f64;
    let mut it = reduced.into_iter();
    let mut grads = Vec::with_capacity(sums.len());
    for sum in &sums {
        let mut g = Vec::with_capacity(sum.len());
        for s in sum {
            g.push(match s {
                Some(_) => it.next().map(|t| t * inv).transpose()?,
                None => None,
            });
        }
        grads.push(g);
    }
    let loss = it.next().map(|t| (t * inv)?.squeeze(0)).transpose()?;
    let correct = it.next().map(|t| t.to_dtype(DType::F32)?.reshape(&correct_shape)).transpose()?;
    match (loss, correct) {
        (Some(loss), Some(correct)) => Ok(StepGrads { grads, loss, correct, n }),
        _ => candle_core::bail!("the all-reduce lost the step's loss"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f(w) = mean over a micro-batch of (w·x)²: the accumulated gradient over micro-batches of
    /// different sizes equals the gradient of the mean over all their samples.
    #[test]
    fn accumulated_gradients_are_those_of_the_whole_batch() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[0.7f64], &dev)?;
        let xs = [vec![1.0f64, 2.0, 3.0], vec![-1.0, 0.5], vec![4.0]];
        let micro: Vec<Tensor> = xs.iter().map(|x| Tensor::new(x.as_slice(), &dev)).collect::<Result<_>>()?;
        let forward = |x: &Tensor| -> Result<MicroOutput> {
            let loss = x.broadcast_mul(w.as_tensor())?.sqr()?.mean_all()?;
            Ok(MicroOutput { loss, correct: Tensor::new(1f32, &dev)?, n: x.elem_count() })
        };
        let vars = [w.clone()];
        let got = step_grads(&micro, &[&vars], forward)?;
        let all: Vec<f64> = xs.concat();
        // d/dw mean((w x)²) = 2w·mean(x²).
        let want = 2.0 * 0.7 * all.iter().map(|x| x * x).sum::<f64>() / all.len() as f64;
        let g = got.grads[0][0].as_ref().map(|g| g.to_vec1::<f64>()).transpose()?.unwrap_or_default();
        assert!((g[0] - want).abs() < 1e-12, "{} vs {want}", g[0]);
        let loss_want = 0.49 * all.iter().map(|x| x * x).sum::<f64>() / all.len() as f64;
        assert!((got.loss.to_scalar::<f64>()? - loss_want).abs() < 1e-12);
        assert_eq!(got.n, 6);
        assert_eq!(got.correct.to_scalar::<f32>()?, 3.0);
        Ok(())
    }
}

/// The MPI world of `mpirun -np N nas …` (or `srun`): the system's Open MPI through the `mpi`
/// crate, initialised once per process with serialised threading (calls come from the thread
/// that steps; a lock serialises them anyway).
#[cfg(feature = "distributed")]
pub mod mpi_world {
    use std::sync::{Arc, Mutex};

    use candle_core::Result;
    use mpi::collective::SystemOperation;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::{CommunicatorCollectives, Root};
    use mpi::Threading;

    use super::Collective;

    /// The world communicator of this process's MPI job.
    pub struct MpiWorld {
        world: Mutex<SimpleCommunicator>,
        rank: usize,
        size: usize,
    }

    /// MPI stays initialised while this lives; dropping it finalises MPI (at the end of `main`,
    /// after the last collective call).
    pub struct Finalize(#[allow(dead_code)] mpi::environment::Universe);

    // SAFETY: MPI is initialised with `Threading::Serialized`, which allows calls from any
    // thread as long as no two run at once; every call goes through the mutex.
    unsafe impl Send for MpiWorld {}
    unsafe impl Sync for MpiWorld {}

    /// Whether a launcher started this process (Open MPI's mpirun, PMI/PMIx as Slurm's srun).
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
    }

    /// Initialises MPI; None where it is already initialised.
    pub fn init() -> Option<(Arc<MpiWorld>, Finalize)> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Serialized)?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Some((Arc::new(MpiWorld { world: Mutex::new(world), rank, size }), Finalize(universe)))
    }

    impl MpiWorld {
        fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
            let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
            f(&world)
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
            let send = buf.to_vec();
            self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
            Ok(())
        }

        fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
            let send = buf.to_vec();
            self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
            Ok(())
        }

        fn broadcast(&self, buf: &mut [u8]) -> Result<()> {
            self.with(|w| w.process_at_rank(0).broadcast_into(buf));
            Ok(())
        }
    }
}

/// NCCL on the GPUs of a data-parallel run: one communicator per process over its device's
/// stream, made at the first all-reduce (every rank reaches it at the same step), its unique
/// id sent from rank 0 over the MPI world.
#[cfg(feature = "nccl")]
mod nccl {
    use std::sync::{Mutex, OnceLock};

    use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
    use candle_core::op::BackpropOp;
    use candle_core::{bail, CudaStorage, Device, Result, Storage, Tensor};

    use super::Collective;

    struct Shared(Mutex<Comm>);

    // SAFETY: the communicator is used by one thread at a time (the mutex), on the stream of
    // the device it was made for, as NCCL allows.
    unsafe impl Send for Shared {}
    unsafe impl Sync for Shared {}

    static COMM: OnceLock<Shared> = OnceLock::new();

    fn nccl_err(e: impl std::fmt::Debug) -> candle_core::Error {
        candle_core::Error::Msg(format!("NCCL: {e:?}"))
    }

    fn comm(world: &dyn Collective, dev: &candle_core::CudaDevice) -> Result<&'static Shared> {
        if let Some(c) = COMM.get() {
            return Ok(c);
        }
        let id = if world.rank() == 0 { Id::new().map_err(nccl_err)? } else { Id::uninit([0; 128]) };
        let mut bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        world.broadcast(&mut bytes)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, b) in internal.iter_mut().zip(&bytes) {
            *d = *b as std::ffi::c_char;
        }
        let comm =
            Comm::from_rank(dev.cuda_stream(), world.rank(), world.size(), Id::uninit(internal)).map_err(nccl_err)?;
        let _ = COMM.set(Shared(Mutex::new(comm)));
        match COMM.get() {
            Some(c) => Ok(c),
            None => bail!("NCCL: the communicator was not kept"),
        }
    }

    /// The element-wise sum over the ranks of a contiguous f32 vector on a GPU.
    pub(super) fn all_reduce_sum(world: &dyn Collective, flat: &Tensor) -> Result<Tensor> {
        let Device::Cuda(dev) = flat.device() else { bail!("NCCL all-reduce of a tensor not on a GPU") };
        let shared = comm(world, dev)?;
        let n = flat.elem_count();
        let flat = flat.contiguous()?;
        let (storage, layout) = flat.storage_and_layout();
        let Storage::Cuda(s) = &*storage else { bail!("NCCL all-reduce of a tensor not on a GPU") };
        if layout.start_offset() != 0 {
            bail!("NCCL all-reduce of a view");
        }
        let src = s.as_cuda_slice::<f32>()?;
        // SAFETY: NCCL writes all n elements before anything reads them.
        let mut dst = unsafe { dev.alloc::<f32>(n)? };
        {
            let comm = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            comm.all_reduce(src, &mut dst, &ReduceOp::Sum).map_err(nccl_err)?;
        }
        drop(storage);
        let out = CudaStorage::wrap_cuda_slice(dst, dev.clone());
        Ok(Tensor::from_storage(Storage::Cuda(out), n, BackpropOp::none(), false))
    }
}
