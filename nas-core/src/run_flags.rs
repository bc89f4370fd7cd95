//! The flags of the settings every run has, search, retraining and benchmark alike, declared
//! once (`settings`): the data and its batches (under the run's `data` section), and the
//! epochs, seed and device (top level).

use crate::data::DataSpec;
use crate::settings::{parse, Flag};
use crate::DeviceSpec;

/// `--data` and `--subset` (under `data`).
pub fn data_flags() -> Vec<Flag> {
    vec![
        Flag::one("data", "spec", "SPEC", parse::<DataSpec>)
            .help("Data: synthetic, cifar10:DIR, cifar100:DIR or folder:DIR"),
        Flag::one("subset", "subset", "N", parse::<usize>)
            .help("Use only the first N training images (a search splits them 50/50 for weights and architecture)"),
    ]
}

/// `--batch-size` (under `data`).
pub fn batch_size_flag() -> Flag {
    Flag::one("batch-size", "batch_size", "B", parse::<usize>).help(
        "Micro-batch size of one forward (a search's weight and architecture steps alike; per process with \
         mpirun)",
    )
}

/// `--accumulate` (under `data`).
pub fn accumulate_flag() -> Flag {
    Flag::one("accumulate", "accumulate", "N", parse::<usize>).help(
        "Micro-batches per optimiser step, each with its own forward and batch statistics: gradients of \
         the mean loss over accumulate × batch size (× ranks) samples",
    )
}

/// `--image-size` (under `data`).
pub fn image_size_flag() -> Flag {
    Flag::one("image-size", "image_size", "N", parse::<usize>).help(
        "Side of the images: CIFAR's 32×32 images are resized to it, the synthetic ones drawn at it, a folder \
         dataset's resized into memory to it, or random-resized crops of it streamed from the files with --net \
         imagenet (default 32; imagenet retraining 224)",
    )
}

/// `--epochs`, `--seed` and `--device` (top level).
pub fn run_flags() -> Vec<Flag> {
    vec![
        Flag::one("epochs", "epochs", "N", parse::<usize>).help("Number of epochs"),
        Flag::one("seed", "seed", "S", parse::<u64>)
            .help("Random seed (weights, α, data order, augmentation, drop path, synthetic data)"),
        device_flag(),
    ]
}

/// `--device` (top level).
pub fn device_flag() -> Flag {
    Flag::one("device", "device", "D", parse::<DeviceSpec>).help("Device: cpu, cuda or cuda:N")
}
