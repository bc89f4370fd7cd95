//! The methods against DARTS' collapse through the binary, killed after checkpoints and
//! resumed (a test binary of its own: it is long, and the interruption tests' timing should
//! not share the machine with it).

mod common;

use common::kills::killed_and_resumed;
use common::write_cifar10;

/// The methods against DARTS' collapse, in both spaces, on the embedded data and on CIFAR-10
/// binary files: each killed after checkpoints resumes to the uninterrupted run's genotype,
/// records and final tensors.
#[test]
fn collapse_methods_killed_after_checkpoints_resume_to_the_same_genotype() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_cifar10(&data, &[("data_batch_1.bin", 100), ("data_batch_2.bin", 60)]);
    let cifar = format!("cifar10:{}", data.display());
    let cases: [&[&str]; 6] = [
        &["--method", "beta-darts", "--space", "nb201", "--data", &cifar],
        &["--method", "beta-darts"],
        &["--method", "sdarts", "--perturb", "adv", "--adv-steps", "2", "--data", &cifar],
        &["--method", "sdarts", "--space", "nb201"],
        &["--method", "drnas", "--partial-channels", "2", "--data", &cifar],
        &["--method", "drnas", "--reg", "kl", "--space", "nb201"],
    ];
    for (i, extra) in cases.into_iter().enumerate() {
        eprintln!("{extra:?}");
        killed_and_resumed(extra, 0x27d4_eb2f ^ i as u32);
    }
}
