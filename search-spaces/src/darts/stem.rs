//! The layers before the first cell of DARTS' networks, which give the cells their inputs s0
//! and s1, in the two skeletons (`NetKind`):
//! - CIFAR (`model_search.py`, `model.py`'s `NetworkCIFAR`): `stem` = conv3×3 (in → out) + BN;
//!   s0 = s1, the size of the image.
//! - ImageNet (PC-DARTS' `model_search_imagenet.py`, DARTS' `NetworkImageNet`): `stem0` =
//!   conv3×3 s2 (in → out/2) + BN, ReLU, conv3×3 s2 (out/2 → out) + BN, giving s0; `stem1` =
//!   ReLU, conv3×3 s2 (out → out) + BN, giving s1. A 224×224 image gives s0 at 56×56 and s1 at
//!   28×28, so the first cell treats s0 as a reduced input (FactorizedReduce).
//!
//! Every BN is affine; parameter names are the PyTorch `Sequential` indices (`stem.0.weight`,
//! `stem0.3.weight`, `stem1.2.bias`). The search supernet has out = 3C in both skeletons; the
//! retraining network 3C for CIFAR and C for ImageNet.

use candle_core::{Result, Tensor};
use nas_core::nn::{BatchNorm2d, Conv2d, Mode};
use nas_core::onnx::Graph;
use nas_core::params::ParamBuilder;

use crate::model_config::NetKind;

/// A map's height and width.
type Size = (usize, usize);

#[derive(Debug, Clone)]
pub(super) enum Stem {
    /// `stem`: conv3×3 + BN; s0 = s1.
    Cifar { conv: Conv2d, bn: BatchNorm2d },
    /// `stem0`: conv3×3 s2 + BN, ReLU, conv3×3 s2 + BN (s0); `stem1`: ReLU, conv3×3 s2 + BN (s1).
    ImageNet { stem0: [(Conv2d, BatchNorm2d); 2], stem1: (Conv2d, BatchNorm2d) },
}

impl Stem {
    /// The stem of `net` from images of `ci` channels to s0 and s1 of `co` channels.
    pub(super) fn new(pb: &ParamBuilder, net: NetKind, ci: usize, co: usize) -> crate::Result<Self> {
        let conv_bn = |pb: &ParamBuilder, conv: usize, ci, co, stride| -> crate::Result<_> {
            Ok((Conv2d::new(&pb.pp(conv), ci, co, 3, stride, 1)?, BatchNorm2d::new(&pb.pp(conv + 1), co, true)?))
        };
        Ok(match net {
            NetKind::Cifar => {
                let (conv, bn) = conv_bn(&pb.pp("stem"), 0, ci, co, 1)?;
                Stem::Cifar { conv, bn }
            }
            NetKind::ImageNet => {
                let s0 = pb.pp("stem0");
                let stem0 = [conv_bn(&s0, 0, ci, co / 2, 2)?, conv_bn(&s0, 3, co / 2, co, 2)?];
                let stem1 = conv_bn(&pb.pp("stem1"), 1, co, co, 2)?;
                Stem::ImageNet { stem0, stem1 }
            }
        })
    }

    /// (s0, s1) of images x (B, in, H, W).
    pub(super) fn forward(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        match self {
            Stem::Cifar { conv, bn } => {
                let s = bn.forward(&conv.forward(x, mode)?, mode)?;
                Ok((s.clone(), s))
            }
            Stem::ImageNet { stem0: [(c0, b0), (c1, b1)], stem1: (c2, b2) } => {
                let h = b0.forward(&c0.forward(x, mode)?, mode)?.relu()?;
                let s0 = b1.forward(&c1.forward(&h, mode)?, mode)?;
                let s1 = b2.forward(&c2.forward(&s0.relu()?, mode)?, mode)?;
                Ok((s0, s1))
            }
        }
    }

    /// `forward` in evaluation mode as ONNX nodes: the names of s0 and s1.
    pub(super) fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<(String, String)> {
        // conv (index i) and BN (index i + 1) of a Sequential.
        let conv_bn = |g: &mut Graph, conv: &Conv2d, bn: &BatchNorm2d, i: usize, x: &str| {
            let y = g.scoped(i, |g| conv.onnx(g, x))?;
            g.scoped(i + 1, |g| bn.onnx(g, &y))
        };
        match self {
            Stem::Cifar { conv, bn } => {
                let s = g.scoped("stem", |g| conv_bn(g, conv, bn, 0, x))?;
                Ok((s.clone(), s))
            }
            Stem::ImageNet { stem0: [(c0, b0), (c1, b1)], stem1: (c2, b2) } => {
                let s0 = g.scoped("stem0", |g| {
                    let h = conv_bn(g, c0, b0, 0, x)?;
                    let h = g.relu(&h);
                    conv_bn(g, c1, b1, 3, &h)
                })?;
                let s1 = g.scoped("stem1", |g| {
                    let h = g.relu(&s0);
                    conv_bn(g, c2, b2, 1, &h)
                })?;
                Ok((s0, s1))
            }
        }
    }

    /// The sizes of s0 and s1 and the stem's mult-adds for one h×w image.
    pub(super) fn mult_adds(&self, hw: Size) -> Option<(Size, Size, u128)> {
        match self {
            Stem::Cifar { conv, .. } => {
                let (s, m) = conv.mult_adds(hw)?;
                Some((s, s, m))
            }
            Stem::ImageNet { stem0: [(c0, _), (c1, _)], stem1: (c2, _) } => {
                let (h, ma) = c0.mult_adds(hw)?;
                let (s0, mb) = c1.mult_adds(h)?;
                let (s1, mc) = c2.mult_adds(s0)?;
                Some((s0, s1, ma + mb + mc))
            }
        }
    }
}
