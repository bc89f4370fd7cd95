//! `nas`: differentiable architecture search from the command line.

mod bench_cmd;
mod bilevel_cmd;
mod config_flags;
mod draw;
mod eval_cmd;
mod export_cmd;
mod flags;
mod plot_cmd;
mod progress;
mod run_setup;
mod search_cmd;
mod select_cmd;
mod show_cmd;
mod tensorboard;
/// The integration tests' event-file reader, for `tensorboard`'s unit tests too.
#[cfg(test)]
#[path = "../tests/common/tfevents.rs"]
mod tfevents;
mod train_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Every tensor op allocates its output. jemalloc keeps freed pages for reuse (decay disabled)
// instead of returning them to the kernel and faulting fresh zeroed pages in on the next step,
// which costs a quarter of a CPU search step with the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: ReuseZeroed = ReuseZeroed;

/// jemalloc, except that zeroed allocations are plain allocations cleared with memset.
/// jemalloc zeroes a large reused block by handing its pages back to the kernel
/// (madvise DONTNEED) and faulting them in again, and candle allocates every gradient buffer
/// and many kernel outputs zeroed: that was ~30k page faults and TLB shootdowns per training
/// step. Clearing memory that is already mapped is several times cheaper. Large allocations
/// are counted for `nas bench`'s bytes per step.
#[cfg(not(target_env = "msvc"))]
struct ReuseZeroed;

#[cfg(not(target_env = "msvc"))]
// SAFETY: every method forwards to jemalloc with the caller's layout; alloc_zeroed clears
// exactly the `layout.size()` bytes that a successful allocation returned.
unsafe impl std::alloc::GlobalAlloc for ReuseZeroed {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        nas_core::bench::note_allocation(layout.size());
        tikv_jemallocator::Jemalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        nas_core::bench::note_allocation(layout.size());
        let p = tikv_jemallocator::Jemalloc.alloc(layout);
        if !p.is_null() {
            std::ptr::write_bytes(p, 0, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        tikv_jemallocator::Jemalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        nas_core::bench::note_allocation(new_size);
        tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size)
    }
}

#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

/// Returns the pages jemalloc holds free to the kernel (every arena's `purge`), once per epoch.
/// With decay disabled nothing else ever does, and a search, whose weight steps, α steps and
/// evaluation allocate in different patterns, kept faulting fresh pages: its resident memory
/// grew ~35 MiB an epoch with no tensor retained. Purging at an epoch's end costs the next
/// epoch's first step its page faults, not every step's.
pub(crate) fn release_free_pages() {
    #[cfg(not(target_env = "msvc"))]
    {
        // "arena.<MALLCTL_ARENAS_ALL>.purge": all arenas; no value read or written.
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: a NUL-terminated name and null old/new pointers with zero length, as mallctl's
        // contract for a command without arguments allows.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            tracing::debug!("jemalloc arena purge returned {rc}");
        }
    }
}

/// Differentiable neural architecture search (DARTS, PC-DARTS): search cells, export the
/// genotype as JSON, retrain and evaluate the derived network, inspect it and benchmark.
#[derive(Parser)]
#[command(name = "nas", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Print only results and errors (no progress)
    #[arg(short, long, global = true)]
    quiet: bool,

    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Worker threads for CPU kernels and batch assembly (default: all cores)
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Search for a cell architecture and write DIR/genotype.json
    Search(Box<search_cmd::SearchArgs>),
    /// Select the architecture of a finished search's supernet (DARTS-PT) and write DIR/select-pt/genotype.json
    Select(Box<select_cmd::SelectArgs>),
    /// Retrain a genotype's network from scratch and write DIR/weights.safetensors
    Train(Box<train_cmd::TrainArgs>),
    /// Test accuracy and loss of a trained network, as one JSON line
    Eval(eval_cmd::EvalArgs),
    /// Write a trained network as an ONNX model (images in [0, 1] in, logits out)
    Export(Box<export_cmd::ExportArgs>),
    /// Print a genotype (file, run directory or built-in name) and its network size, or draw its cells
    Show(show_cmd::ShowArgs),
    /// Draw a run's loss and accuracy curves and, for a search, softmax(α) of every edge
    Plot(plot_cmd::PlotArgs),
    /// The hypergradient methods on small bilevel problems with known solutions
    Bilevel(Box<bilevel_cmd::BilevelArgs>),
    /// Time training steps on random data (JSON output comparable with darts_ref.py)
    Bench {
        #[command(subcommand)]
        what: bench_cmd::BenchCommand,
    },
}

/// Settings every command sees.
pub struct Globals {
    pub quiet: bool,
}

/// Sizes the global pool (the data loader's) to `--threads` and returns the pool the command
/// runs on, of the same size (all cores without the flag).
fn init_threads(threads: Option<usize>) -> anyhow::Result<nas_core::ops::cpu::ThreadPool> {
    let n = match threads {
        Some(0) => anyhow::bail!("--threads must be positive"),
        Some(n) => n,
        None => nas_core::bench::worker_threads(),
    };
    let cannot = |e| anyhow::anyhow!("cannot start {n} threads: {e}");
    if threads.is_some() {
        // candle's matrix kernels read the same variable as rayon.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        nas_core::ops::cpu::init_thread_pool(n).map_err(cannot)?;
    }
    nas_core::ops::cpu::compute_pool(n).map_err(cannot)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.verbose);
    let pool = init_threads(cli.threads)?;
    // Only rank 0 of a data-parallel run shows progress and results.
    let g = Globals { quiet: cli.quiet || !nas_core::dist::is_writer() };
    pool.install(|| match cli.command {
        Command::Search(args) => search_cmd::run(*args, &g),
        Command::Select(args) => select_cmd::run(*args, &g),
        Command::Train(args) => train_cmd::run(*args, &g),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Export(args) => export_cmd::run(*args),
        Command::Show(args) => show_cmd::run(args),
        Command::Plot(args) => plot_cmd::run(args),
        Command::Bench { what } => bench_cmd::run(what),
        Command::Bilevel(args) => bilevel_cmd::run(*args),
    })
}

/// Writes to stdout; a closed pipe (`nas show … | head`) ends the program quietly.
pub fn out(text: &str) -> anyhow::Result<()> {
    out_bytes(text.as_bytes())
}

/// `out` for any bytes (a picture).
pub fn out_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    // Rank 0 alone reports a data-parallel run.
    if !nas_core::dist::is_writer() {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|_| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

fn main() -> ExitCode {
    // Errors are reported as one line; tensor-library errors would otherwise carry a captured
    // backtrace whenever RUST_BACKTRACE is set. Panics still honour RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // candle's elementwise thread pool spins between ops by default, taking cycles from the
    // kernels' rayon workers; parking at once is faster here (measured with `nas bench`).
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    let cli = Cli::parse();
    // Started by mpirun or srun: join the MPI world (MPI is finalised when `_mpi` drops, after
    // the run).
    #[cfg(feature = "distributed")]
    let _mpi = if nas_core::dist::mpi_world::launched() {
        match nas_core::dist::mpi_world::init() {
            Some((world, finalize)) => {
                nas_core::dist::set_world(world);
                Some(finalize)
            }
            None => {
                eprintln!("error: MPI could not be initialised");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<run_setup::Interrupted>() => {
            eprintln!("{err:#}");
            ExitCode::from(run_setup::INTERRUPTED_EXIT as u8)
        }
        Err(err) => {
            eprintln!("error: {}", flags::render(&err));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_documented() {
        Cli::command().debug_assert();
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{} has no help", arg.get_id());
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no about", sub.get_name());
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "nas");
    }
}
