//! Bad input everywhere a user can reach it, one test per case, each running the binary:
//! flags, config files, genotype files and data. Every case must fail with a non-zero exit
//! and one `error:` message that names the flag or file and what is wrong, without a panic
//! or a backtrace, and must leave no run directory behind (`{run}` below never exists
//! afterwards).
//!
//! Arguments are written as one string; `{tmp}` is the test's temporary directory and `{run}`
//! the run directory a search or training run would create.

mod common;

use std::path::Path;

use common::{assert_rejected, nas, write_cifar10, write_folder};

/// The cases the command-line parser (clap) rejects, with its exit status 2; every other case
/// is refused by the tool itself with status 1.
const PARSER_ERRORS: &[&str] = &[
    "search_negative_channels",
    "search_unknown_space",
    "export_unknown_format",
    "search_unknown_method",
    "search_unknown_device",
    "search_bad_cuda_index",
    "search_unknown_flag",
    "search_resume_with_force",
    "search_unknown_rdarts_space",
    "search_unknown_early_stop",
    "search_unknown_resource",
    "search_unknown_viewpoint",
    "search_unknown_net",
    "search_subset_fraction_not_a_number",
    "train_unknown_recipe",
    "train_unknown_schedule",
    "data_unknown_spec",
    "show_unknown_format",
    "show_image_size_without_flops",
];

/// Every file under `dir` with its bytes (run locks aside: their content is the last
/// writer's process id).
fn snapshot(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// Runs `args` after `setup` wrote its files into the temporary directory; checks the clean
/// rejection with its exit status, that no run directory was created and that nothing
/// already there changed (a refused resume leaves its run as it was).
fn rejects(name: &str, setup: impl FnOnce(&Path), args: &str, wants: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let before = snapshot(tmp.path());
    let run = tmp.path().join("run");
    let args = args.replace("{run}", run.to_str().unwrap()).replace("{tmp}", tmp.path().to_str().unwrap());
    let argv: Vec<&str> = args.split_whitespace().collect();
    let o = nas(&argv);
    assert_rejected(&o, wants);
    let want_code = if PARSER_ERRORS.contains(&name) { 2 } else { 1 };
    assert_eq!(o.status.code(), Some(want_code), "`nas {args}`: {}", common::stderr(&o));
    assert!(!run.exists(), "`nas {args}` failed but left a run directory behind");
    assert!(snapshot(tmp.path()) == before, "`nas {args}` failed but changed files in its directory");
}

macro_rules! bad_input {
    ($($name:ident: $args:expr => [$($want:expr),+ $(,)?] $(, setup = $setup:expr)?;)+) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_variables)]
                let setup = |_: &Path| {};
                $(let setup = $setup;)?
                rejects(stringify!($name), setup, $args, &[$($want),+]);
            }
        )+
    };
}

fn write(name: &'static str, text: &'static str) -> impl FnOnce(&Path) {
    move |dir: &Path| std::fs::write(dir.join(name), text).unwrap()
}

/// A darts genotype with `normal` as its normal cell and DARTS_V2's reduction cell.
fn genotype_file(normal: &'static str) -> impl FnOnce(&Path) {
    move |dir: &Path| {
        let reduce = r#"[["max_pool_3x3",0],["max_pool_3x3",1],["skip_connect",2],["max_pool_3x3",1],
            ["max_pool_3x3",0],["skip_connect",2],["skip_connect",2],["max_pool_3x3",1]]"#;
        let text = format!(r#"{{"space":"darts","normal":{normal},"reduce":{reduce}}}"#);
        std::fs::write(dir.join("g.json"), text).unwrap()
    }
}

fn cifar10(files: &'static [(&'static str, usize)]) -> impl FnOnce(&Path) {
    move |dir: &Path| write_cifar10(&dir.join("c10"), files)
}

/// Rewrites one byte (or appends/truncates) of a file `setup` wrote.
fn edit_file(rel: &'static str, edit: impl FnOnce(&mut Vec<u8>)) -> impl FnOnce(&Path) {
    move |dir: &Path| {
        let p = dir.join(rel);
        let mut bytes = std::fs::read(&p).unwrap();
        edit(&mut bytes);
        std::fs::write(p, bytes).unwrap();
    }
}

fn folder(extra: impl FnOnce(&Path)) -> impl FnOnce(&Path) {
    move |dir: &Path| {
        write_folder(&dir.join("img"), 24, 2, 1);
        extra(&dir.join("img"));
    }
}

// ---- flags -------------------------------------------------------------------------------

bad_input! {
    search_zero_channels: "search --channels 0 --out {run}" => ["--channels", "must be positive"];
    search_zero_layers: "search --layers 0 --out {run}" => ["--layers", "must be positive"];
    search_zero_batch_size: "search --batch-size 0 --out {run}" => ["--batch-size", "must be positive"];
    search_zero_epochs: "search --epochs 0 --out {run}" => ["--epochs", "must be positive"];
    search_zero_subset: "search --subset 0 --out {run}" => ["--subset", "must be positive"];
    search_negative_channels: "search --channels -4 --out {run}" => ["--channels", "'-4'", "invalid value"];
    search_negative_learning_rate: "search --lr -0.1 --out {run}" => ["--lr", "-0.1", "must be a finite non-negative number"];
    search_zero_arch_learning_rate: "search --arch-lr 0 --out {run}" => ["--arch-lr", "must be positive"];
    search_k_not_dividing_c: "search --channels 8 --partial-channels 3 --out {run}" => ["K=3 must divide --channels C=8"];
    search_subset_smaller_than_two_batches: "search --subset 20 --batch-size 16 --out {run}" => ["--subset 20", "--batch-size 16"];
    search_unknown_preset: "search --preset fast --out {run}" => ["unknown preset `fast`", "darts-1st"];
    search_unknown_space: "search --space nb101 --out {run}" => ["--space", "unknown space `nb101`"];
    search_unknown_method: "search --method third-order --out {run}" => ["--method", "unknown method `third-order`", "unrolled", "implicit-cg"];
    search_unknown_device: "search --device tpu --out {run}" => ["--device", "invalid device `tpu`"];
    search_bad_cuda_index: "search --device cuda:x --out {run}" => ["--device", "`cuda:x`"];
    search_unknown_flag: "search --chanels 8 --out {run}" => ["unexpected argument '--chanels'", "--channels"];
    search_resume_with_force: "search --resume --force --out {run}" => ["--resume", "--force"];
    search_resume_without_out: "search --resume" => ["--resume needs --out"];
    search_resume_of_a_missing_run: "search --resume --out {run}" => ["not a run directory"];
    search_nb201_with_partial_channels: "search --space nb201 --partial-channels 2 --out {run}" => ["--partial-channels", "darts space only"];
    search_nb201_with_edge_norm: "search --space nb201 --edge-norm --out {run}" => ["--edge-norm", "darts space only"];
    search_nb201_with_imagenet_stem: "search --space nb201 --net imagenet --out {run}" => ["--net", "must be cifar"];
    search_unknown_net: "search --net mobile --out {run}" => ["--net", "unknown network `mobile`"];
    search_imagenet_stem_with_odd_channels: "search --net imagenet --channels 9 --out {run}" => ["--channels", "must be even", "--net imagenet"];
    search_nb201_with_skip_cap: "search --space nb201 --max-skip-connect 2 --out {run}" => ["--max-skip-connect", "darts space only"];
    search_unknown_op_in_set: "search --ops skip_connect,conv_7x1_1x7 --out {run}" => ["--ops", "unknown op `conv_7x1_1x7`"];
    search_op_set_of_none_only: "search --ops none --out {run}" => ["--ops", "other than `none`"];
    search_op_listed_twice: "search --ops skip_connect,skip_connect --out {run}" => ["--ops", "listed twice"];
    search_nb201_with_op_set: "search --space nb201 --ops none,skip_connect --out {run}" => ["--ops", "darts space only"];
    search_stage_ops_not_decreasing: "search --preset p-darts --stage-ops 8,8,3 --out {run}" => ["--stage-ops", "must decrease"];
    search_stage_lists_of_different_lengths: "search --preset p-darts --stage-layers 5,11 --out {run}" => ["--stage-layers", "one value per stage"];
    search_progressive_op_count_differs_from_op_set: "search --preset p-darts --ops none,skip_connect --out {run}" => ["--stage-ops", "starts at 8 ops per edge", "--ops"];
    search_progressive_on_nb201: "search --preset p-darts --space nb201 --out {run}" => ["darts space"];
    search_unknown_rdarts_space: "search --space s5 --out {run}" => ["--space", "s5", "s1, s2, s3 or s4"];
    config_op_set_with_wrong_edge_count: "search --config {tmp}/c.json --out {run}" => ["model.ops", "`normal` has 1 edge lists", "14 edges"],
        setup = write("c.json", r#"{"model": {"ops": {"normal": [["skip_connect"]], "reduce": [["skip_connect"]]}}}"#);
    config_empty_op_set: "search --config {tmp}/c.json --out {run}" => ["model.ops", "edge 0", "empty"],
        setup = write("c.json", r#"{"model": {"ops": {"normal": [[], [], [], [], [], [], [], [], [], [], [], [], [], []], "reduce": []}}}"#);
    search_implicit_without_neumann_terms: "search --method implicit --neumann-steps 0 --out {run}" => ["--neumann-steps", "must be positive"];
    search_unrolled_without_steps: "search --method unrolled --unroll-steps 0 --out {run}" => ["--unroll-steps", "must be positive for the unrolled method"];
    search_bda_share_above_one: "search --method bda --bda-mu 1.5 --out {run}" => ["--bda-mu", "[0, 1]", "1.5"];
    search_unknown_viewpoint: "search --method bda --viewpoint neutral --out {run}" => ["--viewpoint", "unknown viewpoint `neutral`"];
    search_cg_without_steps: "search --method implicit-cg --cg-steps 0 --out {run}" => ["--cg-steps", "must be positive for the implicit-cg method"];
    search_negative_cg_damping: "search --method implicit-cg --cg-damping -1 --out {run}" => ["--cg-damping", "finite non-negative", "-1"];
    search_unknown_early_stop: "search --early-stop patience --out {run}" => ["patience", "darts-es"];
    search_gdas_with_partial_channels: "search --method gdas --partial-channels 2 --out {run}" => ["gdas method samples whole ops", "--partial-channels"];
    search_snas_with_hessian: "search --method snas --hessian-every 1 --out {run}" => ["snas method has no α-Hessian", "--hessian-every"];
    search_tau_min_above_tau_max: "search --method gdas --tau-max 0.1 --tau-min 1 --out {run}" => ["--tau-max", "0 < tau_min ≤ tau_max", "0.1 and 1"];
    search_zero_tau: "search --method snas --tau-min 0 --out {run}" => ["--tau-min", "0 < tau_min"];
    search_resource_penalty_without_snas: "search --method gdas --resource-weight 0.5 --out {run}" => ["--resource-weight", "SNAS' penalty"];
    search_negative_resource_weight: "search --method snas --resource-weight -1 --out {run}" => ["--resource-weight", "finite non-negative"];
    search_unknown_resource: "search --method snas --resource flops --out {run}" => ["--resource", "unknown resource `flops`", "mult-adds"];
    search_enas_without_controller_steps: "search --method enas --controller-steps 0 --out {run}" => ["--controller-steps", "must be positive for the enas method"];
    search_random_without_samples: "search --method random --select-samples 0 --out {run}" => ["--select-samples", "must be positive for the random method"];
    search_progressive_gdas: "search --preset p-darts --method gdas --out {run}" => ["gdas method does not run in a progressive search"];
    search_enas_on_edges_of_different_ops: "search --method enas --space s1 --out {run}" => ["ENAS chooses from one op list"];
    search_early_stop_without_eigenvalue: "search --early-stop darts-es --hessian-every 0 --out {run}" => ["--early-stop", "--hessian-every (hessian_every) must be positive"];
    search_early_stop_config_without_eigenvalue: "search --config {tmp}/c.json --out {run}" => ["--hessian-every (hessian_every) must be positive", "R-DARTS"], setup = write("c.json", r#"{"early_stop": "darts-es"}"#);
    search_arch_start_after_the_last_epoch: "search --epochs 10 --arch-start-epoch 10 --out {run}" => ["--arch-start-epoch 10", "--epochs 10"];
    zero_threads: "--threads 0 search --out {run}" => ["--threads must be positive"];
    search_synthetic_at_an_image_size_the_network_cannot_take: "search --image-size 3 --out {run}" => ["divisible by 4", "3x3"];
    search_zero_image_size: "search --image-size 0 --out {run}" => ["--image-size", "must be positive"];
    export_without_a_network: "export --out {run}" => ["give a run directory of nas train", "--weights"];
    export_of_a_missing_run: "export {tmp}/nothing --out {run}" => ["nothing", "not a run directory"];
    export_of_a_search_run: "export {tmp} --out {run}" => ["search run", "nas train --genotype"],
        setup = write("config.json", r#"{"method": {"name": "first-order"}, "epochs": 2}"#);
    export_run_with_network_flags: "export {tmp} --channels 8 --out {run}" => ["--weights"];
    export_weights_without_genotype: "export --weights {tmp}/w.safetensors --out {run}" => ["--genotype is required"];
    export_missing_weights_file: "export --weights {tmp}/w.safetensors --genotype DARTS_V2 --data cifar10:{tmp}/c10 --out {run}" => ["w.safetensors"],
        setup = cifar10(&[("data_batch_1.bin", 4), ("test_batch.bin", 2)]);
    export_unknown_format: "export {tmp} --format tflite --out {run}" => ["--format", "tflite", "onnx"];
    train_without_genotype: "train --out {run}" => ["--genotype is required"];
    train_unknown_recipe: "train --genotype DARTS_V2 --recipe nasnet --out {run}" => ["--recipe", "unknown recipe `nasnet`", "pc-darts"];
    train_unknown_schedule: "train --genotype DARTS_V2 --lr-schedule exp --out {run}" => ["--lr-schedule", "unknown schedule `exp`", "step:GAMMA"];
    train_step_gamma_above_one: "train --genotype DARTS_V2 --lr-schedule step:1.5 --out {run}" => ["--lr-schedule", "(0, 1]", "1.5"];
    train_label_smoothing_out_of_range: "train --genotype DARTS_V2 --label-smoothing 1 --out {run}" => ["--label-smoothing", "[0, 1)"];
    train_imagenet_nb201: "train --genotype |skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2| --net imagenet --out {run}" => ["--net", "must be cifar"];
    config_search_step_gamma_above_one: "search --config {tmp}/c.json --out {run}" => ["weight_optimizer.schedule.gamma", "(0, 1]", "got 2"],
        setup = write("c.json", r#"{"weight_optimizer": {"schedule": {"kind": "step", "gamma": 2}}}"#);
    search_subset_fraction_too_large: "search --subset-fraction 0.8,0.5 --out {run}" => ["--subset-fraction", "summing to at most 1"];
    search_subset_fraction_not_a_number: "search --subset-fraction half --out {run}" => ["--subset-fraction", "`half` is not a number"];
    search_imagenet_stem_on_odd_image_size: "search --net imagenet --image-size 48 --data folder:{tmp}/img --out {run}" => ["divisible by 32", "48x48"],
        setup = folder(|_| {});
    train_unknown_genotype_name: "train --genotype DARTS_V9 --out {run}" => ["DARTS_V9", "not a file, nor a built-in genotype"];
    train_zero_channels: "train --genotype DARTS_V2 --channels 0 --out {run}" => ["--channels", "must be positive"];
    train_odd_channels: "train --genotype DARTS_V2 --channels 7 --out {run}" => ["--channels", "must be even"];
    train_drop_path_out_of_range: "train --genotype DARTS_V2 --drop-path 1.5 --out {run}" => ["--drop-path", "[0, 1)"];
    train_negative_auxiliary_weight: "train --genotype DARTS_V2 --auxiliary-weight -1 --out {run}" => ["--auxiliary-weight", "non-negative"];
    train_auxiliary_head_on_two_layers: "train --genotype DARTS_V2 --layers 2 --out {run}" => ["auxiliary head needs --layers 3"];
    train_zero_learning_rate: "train --genotype DARTS_V2 --lr 0 --out {run}" => ["--lr", "need 0 < --lr", "got lr 0"];
    train_nb201_with_auxiliary_head: "train --genotype |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2| --auxiliary-weight 0.4 --out {run}" => ["no auxiliary head", "--auxiliary-weight"];
    train_nb201_with_drop_path: "train --genotype |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2| --drop-path 0.2 --out {run}" => ["drop path", "--drop-path"];
    train_auxiliary_head_on_small_images: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 24 --out {run}" => ["auxiliary head needs 32x32 images"], setup = folder(|_| {});
    train_resume_with_changed_options: "train --resume --out {tmp}/done --epochs 3" => ["differ from the run's saved configuration"], setup = finished_train_run;
    train_resume_from_a_torn_checkpoint: "train --resume --out {tmp}/done" => ["checkpoint.safetensors", "truncated or not a safetensors file"],
        setup = |d: &Path| { finished_train_run(d); edit_file("done/checkpoint.safetensors", |b| b.truncate(b.len() / 2))(d) };
    eval_of_torn_weights: "eval --run {tmp}/done" => ["weights.safetensors", "truncated or not a safetensors file"],
        setup = |d: &Path| { finished_train_run(d); edit_file("done/weights.safetensors", |b| b.truncate(100))(d) };
    bench_zero_steps: "bench search --steps 0" => ["--steps must be positive"];
    bench_zero_batch: "bench train --batch-size 0 --steps 1" => ["--batch-size", "must be positive"];
    bench_k_not_dividing_c: "bench search --channels 6 --partial-channels 4 --steps 1" => ["K=4 must divide"];
    show_zero_channels: "show DARTS_V2 --channels 0" => ["--channels must be positive"];
    show_unknown_format: "show DARTS_V2 --format bmp" => ["--format", "bmp", "invalid value"];
    show_too_many_layers: "show DARTS_V2 --layers 1000000" => ["--layers 1000000 is too many"];
    show_flops_unfitting_image: "show DARTS_V2 --flops --net imagenet --image-size 200" => ["200x200", "divisible by 32"];
    show_flops_huge_image: "show DARTS_V2 --flops --image-size 4000000" => ["4000000x4000000", "up to 1048576 pixels"];
    show_flops_as_json: "show DARTS_V2 --flops --format json" => ["--flops", "text output"];
    show_flops_of_nb201: "show |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2| --flops" => ["darts networks only"];
    show_imagenet_nb201: "show |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2| --net imagenet" => ["--net must be cifar"];
    show_image_size_without_flops: "show DARTS_V2 --image-size 224" => ["--flops"];
    train_zero_image_size: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 0 --out {run}" => ["--image-size", "must be positive"], setup = folder(|_| {});
    train_huge_image_size: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 4294967296 --out {run}" => ["--image-size 4294967296 is too large"], setup = folder(|_| {});
    eval_of_a_missing_run: "eval --run {tmp}/nothing" => ["nothing", "not a run directory"];
    eval_of_a_search_run: "eval --run {tmp}" => ["search run"], setup = write("config.json", r#"{"method":"first-order"}"#);
}

/// A binary built without CUDA refuses `--device cuda` before it creates the run.
#[cfg(not(feature = "cuda"))]
#[test]
fn search_on_cuda_without_cuda() {
    rejects(
        "search_on_cuda_without_cuda",
        |_| {},
        "search --device cuda --out {run}",
        &["cuda", "built without CUDA support"],
    );
}

/// A finished one-epoch training run in `dir/done`.
fn finished_train_run(dir: &Path) {
    let out = dir.join("done");
    let arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
    let flags = "train --channels 4 --layers 1 --epochs 1 --subset 32 --batch-size 16 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--genotype", arch, "--out", out.to_str().unwrap()]);
    assert!(nas(&args).status.success());
}

// ---- config files ------------------------------------------------------------------------

bad_input! {
    config_unknown_field: "search --config {tmp}/c.json --out {run}" => ["c.json", "unknown field `chanels`"], setup = write("c.json", r#"{"model":{"chanels":4}}"#);
    config_malformed: "search --config {tmp}/c.json --out {run}" => ["c.json", "malformed JSON"], setup = write("c.json", r#"{"epochs":"#);
    config_wrong_type: "search --config {tmp}/c.json --out {run}" => ["c.json", "invalid type"], setup = write("c.json", r#"{"epochs":"ten"}"#);
    config_missing_file: "search --config {tmp}/missing.json --out {run}" => ["missing.json", "No such file"];
    config_invalid_value: "search --config {tmp}/c.json --out {run}" => ["--channels (model.channels)", "must be positive"], setup = write("c.json", r#"{"model":{"channels":0}}"#);
    config_unknown_method: "search --config {tmp}/c.json --out {run}" => ["c.json", "unknown variant `newton`"], setup = write("c.json", r#"{"method":"newton"}"#);
}

// ---- genotype files ------------------------------------------------------------------------

bad_input! {
    genotype_truncated_json: "show {tmp}/g.json" => ["g.json", "malformed JSON"], setup = write("g.json", r#"{"normal": [["sep_conv_3x3", 0]"#);
    genotype_empty_file: "show {tmp}/g.json" => ["g.json", "malformed JSON"], setup = write("g.json", "");
    genotype_not_an_object: "show {tmp}/g.json" => ["g.json", "expected a JSON object"], setup = write("g.json", "[1, 2]");
    genotype_missing_file: "show {tmp}/missing.json" => ["missing.json", "not a file, nor a built-in genotype"];
    genotype_unknown_op: "show {tmp}/g.json" => ["g.json", "unknown op `conv_9x9`"], setup = genotype_file(
        r#"[["conv_9x9",0],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",1],["skip_connect",0],["skip_connect",0],["dil_conv_3x3",2]]"#);
    genotype_op_from_nb201_in_darts: "train --genotype {tmp}/g.json --out {run}" => ["g.json", "unknown op `nor_conv_3x3` for the darts space"], setup = genotype_file(
        r#"[["nor_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",1],["skip_connect",0],["skip_connect",0],["dil_conv_3x3",2]]"#);
    genotype_op_from_darts_in_nb201: "train --genotype |sep_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2| --out {run}" => ["unknown op `sep_conv_3x3` for the nb201 space"];
    genotype_forward_pointing_input: "show {tmp}/g.json" => ["g.json", "edge 2", "may not point forward"], setup = genotype_file(
        r#"[["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",3],["sep_conv_3x3",1],["sep_conv_3x3",1],["skip_connect",0],["skip_connect",0],["dil_conv_3x3",2]]"#);
    genotype_out_of_range_input: "show {tmp}/g.json" => ["g.json", "edge 7", "input 99 out of range"], setup = genotype_file(
        r#"[["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",1],["skip_connect",0],["skip_connect",0],["dil_conv_3x3",99]]"#);
    genotype_negative_input: "show {tmp}/g.json" => ["g.json", "edge 0", "input_index"], setup = genotype_file(
        r#"[["sep_conv_3x3",-1],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",1],["skip_connect",0],["skip_connect",0],["dil_conv_3x3",2]]"#);
    genotype_odd_edge_count: "show {tmp}/g.json" => ["g.json", "has 3 edges"], setup = genotype_file(
        r#"[["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",0]]"#);
    genotype_cells_of_different_sizes: "show {tmp}/g.json" => ["g.json", "`normal` has 4 edges but `reduce` has 8"], setup = genotype_file(
        r#"[["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1]]"#);
    genotype_concat_out_of_range: "show {tmp}/g.json" => ["g.json", "`normal_concat` entry 9 out of range"], setup = write("g.json",
        r#"{"normal":[["sep_conv_3x3",0],["sep_conv_3x3",1]],"normal_concat":[2,9],"reduce":[["max_pool_3x3",0],["max_pool_3x3",1]]}"#);
    genotype_unknown_space: "show {tmp}/g.json" => ["g.json", "unknown space `nasbench101`"], setup = write("g.json", r#"{"space":"nasbench101"}"#);
    genotype_unknown_field: "show {tmp}/g.json" => ["g.json", "unknown field `normal_cell`"], setup = write("g.json", r#"{"normal_cell":[]}"#);
    genotype_nb201_wrong_node_count: "show |nor_conv_3x3~0|+|" => ["expected 3 nodes"];
    genotype_nb201_wrong_input: "show |nor_conv_3x3~0|+|nor_conv_3x3~2|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|" => ["node 2", "input 0 is written as 2"];
    genotype_nb201_malformed_file: "show {tmp}/g.json" => ["g.json", "expected 3 nodes"], setup = write("g.json", r#"{"space":"nb201","arch":"|x~0|"}"#);
}

// ---- data --------------------------------------------------------------------------------

bad_input! {
    data_unknown_spec: "search --data imagenet:/data --out {run}" => ["--data", "unknown data spec"];
    data_missing_directory: "search --data cifar10:{tmp}/nope --out {run}" => ["nope", "no such directory"];
    data_cifar10_without_batches: "search --data cifar10:{tmp} --out {run}" => ["no data_batch_*.bin"];
    data_cifar10_truncated: "search --data cifar10:{tmp}/c10 --out {run}" => ["data_batch_1.bin", "truncated"],
        setup = |d: &Path| { cifar10(&[("data_batch_1.bin", 3)])(d); edit_file("c10/data_batch_1.bin", |b| b.truncate(b.len() - 100))(d) };
    data_cifar_pickle_naming_os_system: "search --data cifar10:{tmp} --out {run}" => ["data_batch_1", "`os.system`"],
        setup = |d: &Path| for f in ["data_batch_1", "test_batch", "batches.meta"] {
            std::fs::write(d.join(f), b"\x80\x02cos\nsystem\nU\x02lsR.").unwrap()
        };
    data_cifar_pickle_of_floats: "search --data cifar10:{tmp} --out {run}" => ["data_batch_1", "dtype `f8`"],
        setup = |d: &Path| for f in ["data_batch_1", "test_batch", "batches.meta"] {
            std::fs::write(d.join(f), b"\x80\x02cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R.").unwrap()
        };
    data_cifar_truncated_archive: "search --data cifar10:{tmp}/cifar-10-python.tar.gz --out {run}" => ["cifar-10-python.tar.gz", "not a readable tar archive"],
        setup = |d: &Path| {
            let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nas-core/tests/fixtures/cifar/archives/cifar-10-python.tar.gz");
            std::fs::write(d.join("cifar-10-python.tar.gz"), &std::fs::read(archive).unwrap()[..3000]).unwrap()
        };
    data_cifar10_oversized: "search --data cifar10:{tmp}/c10 --out {run}" => ["data_batch_1.bin", "not a whole number of 3073-byte records"],
        setup = |d: &Path| { cifar10(&[("data_batch_1.bin", 3)])(d); edit_file("c10/data_batch_1.bin", |b| b.extend([0u8; 7]))(d) };
    data_cifar10_empty_file: "search --data cifar10:{tmp}/c10 --out {run}" => ["data_batch_2.bin", "empty"], setup = cifar10(&[("data_batch_1.bin", 64), ("data_batch_2.bin", 0)]);
    data_cifar10_label_out_of_range: "search --data cifar10:{tmp}/c10 --out {run}" => ["data_batch_1.bin", "record 1: label 10 out of range"],
        setup = |d: &Path| { cifar10(&[("data_batch_1.bin", 3)])(d); edit_file("c10/data_batch_1.bin", |b| b[3073] = 10)(d) };
    data_cifar10_missing_test_batch: "train --genotype DARTS_V2 --data cifar10:{tmp}/c10 --out {run}" => ["test_batch.bin"], setup = cifar10(&[("data_batch_1.bin", 64)]);
    data_cifar100_label_out_of_range: "train --genotype DARTS_V2 --data cifar100:{tmp} --out {run}" => ["train.bin", "label 100 out of range"],
        setup = |d: &Path| { let mut rec = vec![3u8, 100]; rec.extend([7u8; 3072]); std::fs::write(d.join("train.bin"), rec).unwrap() };
    data_corrupt_image: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 16 --out {run}" => ["zz.png", "not a readable image"],
        setup = folder(|d| std::fs::write(d.join("train/disc/zz.png"), b"\x89PNG but not really").unwrap());
    data_non_image_file: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 16 --out {run}" => ["notes.txt", "not a readable image"],
        setup = folder(|d| std::fs::write(d.join("test/disc/notes.txt"), "three discs and a square").unwrap());
    data_empty_class: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 16 --out {run}" => ["class folder `triangle` has no images"],
        setup = folder(|d| std::fs::create_dir_all(d.join("train/triangle")).unwrap());
    data_file_among_class_folders: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 16 --out {run}" => ["README", "expected only class folders"],
        setup = folder(|d| std::fs::write(d.join("train/README"), "shapes").unwrap());
    data_test_class_unknown_to_train: "train --genotype DARTS_V2 --data folder:{tmp}/img --image-size 16 --out {run}" => ["class `star` does not exist in the training split"],
        setup = folder(|d| { std::fs::create_dir_all(d.join("test/star")).unwrap(); std::fs::copy(d.join("test/disc/0.png"), d.join("test/star/0.png")).unwrap(); });
    data_folder_without_train_split: "search --data folder:{tmp}/img --out {run}" => ["train", "no such directory"],
        setup = folder(|d| std::fs::remove_dir_all(d.join("train")).unwrap());
}
