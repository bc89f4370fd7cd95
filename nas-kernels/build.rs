//! Builds the CUDA kernel sources in src/cuda twice:
//! - always as C++ for the host (the `host_*` entry points run each kernel over its launch
//!   grid on the CPU; the tests check the CUDA arithmetic and launch sequences with them);
//! - with the `cuda` feature, with nvcc, into one fat binary per source holding sm_90 code
//!   (H100/H200) and compute_90 PTX that the driver compiles for any newer GPU; and as PTX
//!   that ptxas assembles for sm_90a, so that an error in the generated code fails the
//!   build, not the first run on a GPU.
//!   NVCC (or CUDA_ROOT/bin/nvcc, or nvcc on PATH) and NAS_CUDA_ARCH (default compute_90)
//!   choose the compiler and the virtual architecture; with NAS_REQUIRE_PTXAS set (CI) a
//!   missing ptxas is an error rather than a warning.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [&str; 7] = ["elementwise", "depthwise", "pool", "pointwise", "partial", "batch_norm", "optim"];
const DIR: &str = "src/cuda";

fn main() {
    println!("cargo:rerun-if-changed={DIR}");
    for v in ["NVCC", "CUDA_ROOT", "NAS_CUDA_ARCH", "NAS_REQUIRE_PTXAS"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    host_build();
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx_build();
    }
}

fn host_build() {
    let mut b = cc::Build::new();
    b.cpp(true).std("c++20").include(DIR).flag("-pthread").flag("-x").flag("c++").opt_level(2);
    for s in SOURCES {
        b.file(format!("{DIR}/{s}.cu"));
    }
    b.file(format!("{DIR}/host_emu.cpp"));
    b.compile("nas_cuda_host");
}

fn nvcc() -> PathBuf {
    if let Some(p) = env::var_os("NVCC") {
        return p.into();
    }
    if let Some(root) = env::var_os("CUDA_ROOT").or_else(|| env::var_os("CUDA_HOME")) {
        let p = Path::new(&root).join("bin/nvcc");
        if p.exists() {
            return p;
        }
    }
    "nvcc".into()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({cmd:?}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ptx_build() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let nvcc = nvcc();
    let arch = env::var("NAS_CUDA_ARCH").unwrap_or_else(|_| "compute_90".into());
    let ptxas = nvcc.with_file_name("ptxas");
    for s in SOURCES {
        let ptx = out.join(format!("{s}.ptx"));
        run(
            Command::new(&nvcc)
                .args(["--ptx", "-O3", "-std=c++17", &format!("-arch={arch}"), "-I", DIR, "-o"])
                .arg(&ptx)
                .arg(format!("{DIR}/{s}.cu")),
            "nvcc",
        );
        let fatbin = out.join(format!("{s}.fatbin"));
        let (sm, compute) = (arch.replace("compute_", "sm_"), arch.clone());
        run(
            Command::new(&nvcc)
                .args(["--fatbin", "-O3", "-std=c++17", "-I", DIR])
                .arg(format!("-gencode=arch={compute},code={sm}"))
                .arg(format!("-gencode=arch={compute},code={compute}"))
                .arg("-o")
                .arg(&fatbin)
                .arg(format!("{DIR}/{s}.cu")),
            "nvcc",
        );
        if ptxas.exists() {
            run(Command::new(&ptxas).args(["-arch=sm_90a", "-o", "/dev/null"]).arg(&ptx), "ptxas");
        } else if env::var_os("NAS_REQUIRE_PTXAS").is_some() {
            panic!("ptxas not found next to {} (NAS_REQUIRE_PTXAS is set)", nvcc.display());
        } else {
            println!("cargo:warning=ptxas not found next to {}; the PTX of {s}.cu was not assembled", nvcc.display());
        }
    }
}
