//! Modified weights kept across images.
//!
//! The rules ask a layer for passes with modified weights (`max(w, 0)`,
//! `w^2`, ...). A convolution computes those by GEMM on a copy of its weights;
//! making that copy once per model instead of once per image and layer is what
//! [`WeightCache`] is for. Layers that apply modifiers on the fly (dense layers,
//! whose weights are large and whose passes are bound by memory reads) are not
//! cached, so the cache costs at most one copy of the convolution weights per
//! modifier in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use ndarray::ArrayD;

use crate::rules::{LinearLayer, Modifier};

/// A layer name and a [`Modifier::key`].
type Key = (String, (u8, u32));

/// Modified weights by layer name and modifier.
#[derive(Debug, Default)]
pub struct WeightCache {
    map: Mutex<HashMap<Key, Arc<ArrayD<f32>>>>,
}

impl WeightCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `m` applied to `layer`'s weights, computed on first use. `name` must
    /// identify the layer (and its weights must not change afterwards).
    pub fn get(&self, name: &str, layer: &dyn LinearLayer, m: Modifier) -> Arc<ArrayD<f32>> {
        let key = (name.to_string(), m.key());
        // a poisoned lock only means another thread panicked while inserting;
        // the map itself is still consistent
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| Arc::new(m.modify(layer.weight())))
            .clone()
    }

    /// Number of modified weight arrays held.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer whose modified weights come from a [`WeightCache`].
pub struct Cached<'a> {
    /// The layer.
    pub layer: &'a dyn LinearLayer,
    /// Where its modified weights are kept.
    pub cache: &'a WeightCache,
    /// The layer's name (cache key).
    pub name: &'a str,
}

impl Cached<'_> {
    fn cached(&self, m: Modifier) -> Option<Arc<ArrayD<f32>>> {
        (m != Modifier::Identity && !self.layer.modifies_on_the_fly())
            .then(|| self.cache.get(self.name, self.layer, m))
    }
}

impl LinearLayer for Cached<'_> {
    fn dense(&self) -> bool {
        self.layer.dense()
    }

    fn weight(&self) -> &ArrayD<f32> {
        self.layer.weight()
    }

    fn forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, with_bias: bool) -> Result<ArrayD<f32>> {
        self.layer.forward(x, w, with_bias)
    }

    fn bias(&self, out_ndim: usize) -> Option<(&ArrayD<f32>, usize)> {
        self.layer.bias(out_ndim)
    }

    fn backward(
        &self,
        g: &ArrayD<f32>,
        w: &ArrayD<f32>,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        self.layer.backward(g, w, input_shape)
    }

    fn forward_mod(&self, x: &ArrayD<f32>, m: Modifier, with_bias: bool) -> Result<ArrayD<f32>> {
        match self.cached(m) {
            Some(w) => self.layer.forward(x, &w, with_bias),
            None => self.layer.forward_mod(x, m, with_bias),
        }
    }

    fn backward_mod(
        &self,
        g: &ArrayD<f32>,
        m: Modifier,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        match self.cached(m) {
            Some(w) => self.layer.backward(g, &w, input_shape),
            None => self.layer.backward_mod(g, m, input_shape),
        }
    }

    fn modifies_on_the_fly(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dense::Affine;

    #[test]
    fn computes_each_modified_weight_once_and_matches_uncached_passes() {
        let layer = Affine {
            weight: ArrayD::from_shape_vec(vec![3], vec![1.5, -2.0, 0.5]).unwrap(),
            bias: ArrayD::from_shape_vec(vec![3], vec![0.1, 0.2, 0.3]).unwrap(),
        };
        let cache = WeightCache::new();
        let cached = Cached {
            layer: &layer,
            cache: &cache,
            name: "bn",
        };
        let x = ArrayD::from_shape_vec(vec![1, 3, 1, 1], vec![1.0, 2.0, -3.0]).unwrap();
        for m in [
            Modifier::Pos,
            Modifier::Neg,
            Modifier::Pos,
            Modifier::Identity,
        ] {
            let want = layer.forward_mod(&x, m, false).unwrap();
            assert_eq!(cached.forward_mod(&x, m, false).unwrap(), want);
            let want = layer.backward_mod(&x, m, x.shape()).unwrap();
            assert_eq!(cached.backward_mod(&x, m, x.shape()).unwrap(), want);
        }
        // Pos and Neg cached once each; the identity needs no copy
        assert_eq!(cache.len(), 2);
        // w+ = [1.5, 0, 0.5]: x * w+ = [1.5, 0, -1.5]
        let z = cached.forward_mod(&x, Modifier::Pos, false).unwrap();
        assert_eq!(z.iter().copied().collect::<Vec<_>>(), vec![1.5, 0.0, -1.5]);
    }
}
