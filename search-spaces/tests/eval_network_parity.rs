//! Parity of the evaluation network (DARTS `NetworkCIFAR`, `model.py`) with the PyTorch
//! reference's `EvalNetwork` (shared/bench/darts_ref.py): from identical weights and input,
//! with drop path off, the logits, the auxiliary logits, the training loss
//! CE(logits) + 0.4·CE(aux) and the gradient of every weight (auxiliary head included) agree to
//! 1e-4 relative; after that forward has updated the BN running statistics, the eval-mode
//! logits agree too. The fixture comes from tests/fixtures/gen_golden.py:
//!
//! ```python
//! torch.manual_seed(0)
//! m = R.EvalNetwork(R.GENOTYPES['DARTS_V2'], C=4, layers=5); m.train()
//! x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
//! logits, aux = m(x)
//! loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y); loss.backward()
//! m.eval(); eval_logits = m(x)[0]
//! ```

mod common;

use candle_core::{DType, Device};
use common::{assert_gradients, assert_same_tensor_names, fixture, TOL};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::testing::max_rel_err;
use search_spaces::darts::DartsGenotype;
use search_spaces::darts::{DerivedNetwork, DerivedNetworkConfig};
use search_spaces::NetKind;

const FIXTURE: &str = "eval_darts_v2_c4_l5.safetensors";

fn network() -> DerivedNetwork {
    let cfg = DerivedNetworkConfig {
        channels: 4,
        layers: 5,
        num_classes: 10,
        auxiliary: true,
        in_channels: 3,
        net: NetKind::Cifar,
    };
    DerivedNetwork::new(&DartsGenotype::builtin("DARTS_V2").unwrap(), cfg, 7, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn tensor_names_are_the_reference_state_dict() {
    let golden = fixture(FIXTURE);
    assert_same_tensor_names(&golden, &[network().weights()], &[]);
}

#[test]
fn logits_aux_loss_gradients_and_eval_logits_match_pytorch() {
    let golden = fixture(FIXTURE);
    let net = network();
    net.weights().load(&golden, false).unwrap();
    let y = golden["target"].to_dtype(DType::U32).unwrap();
    let (logits, aux) = net.forward(&golden["input"], Mode::TRAIN_WEIGHTS).unwrap();
    let aux = aux.expect("auxiliary logits in training mode");
    for (name, got) in [("logits", &logits), ("aux_logits", &aux)] {
        let e = max_rel_err(got, &golden[name]).unwrap();
        assert!(e < TOL, "{name} rel err {e}");
    }
    let loss = (cross_entropy(&logits, &y).unwrap() + (cross_entropy(&aux, &y).unwrap() * 0.4).unwrap()).unwrap();
    let e = max_rel_err(&loss.reshape(1).unwrap(), &golden["loss"]).unwrap();
    assert!(e < TOL, "loss rel err {e}");
    assert_gradients(&golden, &loss.backward().unwrap(), &[net.weights()]);

    let (eval_logits, none) = net.forward(&golden["input"], Mode::EVAL).unwrap();
    assert!(none.is_none(), "no auxiliary logits in eval mode");
    let e = max_rel_err(&eval_logits, &golden["eval_logits"]).unwrap();
    assert!(e < TOL, "eval logits rel err {e}");
}
