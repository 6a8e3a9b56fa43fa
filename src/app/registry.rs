//! The built-in registry of well-known models, and turning a `--model` value
//! into a file: a path is used as it is, a registry name is downloaded once
//! into the cache (see [`crate::app::fetch`]) and found there afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::app::cache::{self, describe_size};
use crate::app::fetch::{self, CacheState, Options, Target};
use lrp_heatmap::model::BUNDLED_NAME;
use lrp_heatmap::preprocess::Normalization;

/// Where a model comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// Compiled into the binary.
    Bundled,
    /// Downloaded on first use.
    Download {
        /// File name in the cache (and below `LRP_HEATMAP_MIRROR`).
        file: &'static str,
        /// URLs tried in order.
        urls: &'static [&'static str],
        /// Size in bytes.
        size: u64,
        /// SHA-256, lowercase hex.
        sha256: &'static str,
    },
}

/// The class labels of a model's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// The 1000 ImageNet classes in the usual order (`labels::imagenet`).
    Imagenet1k,
}

impl Labels {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Labels::Imagenet1k => "imagenet-1k",
        }
    }
}

/// A known model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    /// Name given to `--model`.
    pub name: &'static str,
    /// One line about it.
    pub description: &'static str,
    /// Bundled or downloaded.
    pub source: Source,
    /// Input `[channels, height, width]` (NCHW).
    pub input: [usize; 3],
    /// Input normalisation the model was trained with.
    pub norm: Normalization,
    /// Output labels.
    pub labels: Labels,
}

/// The ImageNet statistics (torchvision, MXNet Gluon and the ONNX zoo models).
const IMAGENET: Normalization = Normalization {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// The known models. Sizes and checksums are those of the ONNX model zoo files.
pub const ENTRIES: &[Entry] = &[
    Entry {
        name: BUNDLED_NAME,
        description: "EfficientNet-Lite0, ImageNet (bundled in the binary, no download)",
        source: Source::Bundled,
        input: [3, 224, 224],
        norm: IMAGENET,
        labels: Labels::Imagenet1k,
    },
    Entry {
        name: "vgg16",
        description: "VGG16, ONNX model zoo vgg16-7 (MXNet Gluon conversion, opset 7)",
        source: Source::Download {
            file: "vgg16-7.onnx",
            urls: &[
                "https://huggingface.co/onnxmodelzoo/vgg16-7/resolve/main/vgg16-7.onnx",
                "https://media.githubusercontent.com/media/onnx/models/main/validated/vision/classification/vgg/model/vgg16-7.onnx",
            ],
            size: 553_437_328,
            sha256: "f20805a3ecccaa88647bbab4ad011ff2412a9838485ea844de0fcbce349820b9",
        },
        input: [3, 224, 224],
        norm: IMAGENET,
        labels: Labels::Imagenet1k,
    },
    Entry {
        name: "vgg16-12",
        description: "VGG16, ONNX model zoo vgg16-12 (fp32, opset 12)",
        source: Source::Download {
            file: "vgg16-12.onnx",
            urls: &[
                "https://huggingface.co/onnxmodelzoo/vgg16-12/resolve/main/vgg16-12.onnx",
                "https://media.githubusercontent.com/media/onnx/models/main/validated/vision/classification/vgg/model/vgg16-12.onnx",
            ],
            size: 553_437_752,
            sha256: "722c42f53ca03a5480296bf8f9c85a151de3eed9ec982d7d2302ff6e2900c67b",
        },
        input: [3, 224, 224],
        norm: IMAGENET,
        labels: Labels::Imagenet1k,
    },
];

/// The entry called `name`.
pub fn lookup(name: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.name == name)
}

/// Names of all entries, comma-separated.
pub fn names() -> String {
    ENTRIES
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Entry {
    /// The download of this entry (`None` for the bundled model); with a
    /// mirror (`LRP_HEATMAP_MIRROR`) the only URL is `<mirror>/<file>`.
    pub fn target(&self, mirror: Option<&str>) -> Option<Target> {
        let Source::Download {
            file,
            urls,
            size,
            sha256,
        } = self.source
        else {
            return None;
        };
        let urls = match mirror {
            Some(m) => vec![format!("{}/{file}", m.trim_end_matches('/'))],
            None => urls.iter().map(|u| u.to_string()).collect(),
        };
        Some(Target {
            name: self.name.to_string(),
            file: file.to_string(),
            urls,
            size: Some(size),
            sha256: sha256.to_string(),
            fetch_command: format!("lrp-heatmap fetch {}", self.name),
        })
    }
}

/// The registry download called `name`, with `LRP_HEATMAP_MIRROR` applied.
pub fn target(name: &str) -> Result<Target> {
    let Some(entry) = lookup(name) else {
        bail!("unknown model '{name}' (known: {})", names());
    };
    match entry.target(cache::mirror_from_env().as_deref()) {
        Some(t) => Ok(t),
        None => bail!("{name} is bundled in the binary: nothing to fetch"),
    }
}

/// Turns a `--model` value into something [`lrp_heatmap::model::Model::load`] opens:
///
/// 1. an existing file is used as it is;
/// 2. the bundled model's name is passed on (the model is in the binary);
/// 3. a registry name is looked up in the cache and downloaded on first use
///    (unless offline: then the error says what is missing and how to fetch it);
/// 4. a plain file name found in the cache (`fetch URL --name NAME`) is used from there.
///
/// The cache and the network are set up from the environment
/// ([`Options::from_env`]) only when needed; `progress` draws a progress bar.
pub fn resolve(
    model: &Path,
    offline: bool,
    progress: bool,
    log: &mut dyn Write,
) -> Result<PathBuf> {
    if model.is_file() || model == Path::new(BUNDLED_NAME) {
        return Ok(model.to_path_buf());
    }
    resolve_with(model, &Options::from_env(offline, progress)?, log)
}

/// [`resolve`] with given download options.
pub fn resolve_with(model: &Path, opts: &Options, log: &mut dyn Write) -> Result<PathBuf> {
    if model.is_file() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_str().unwrap_or("");
    if name == BUNDLED_NAME {
        return Ok(model.to_path_buf());
    }
    if let Some(entry) = lookup(name) {
        let mirror = cache::mirror_from_env();
        if let Some(t) = entry.target(mirror.as_deref()) {
            return fetch::ensure(&t, opts, false, log);
        }
    }
    if fetch::check_file_name(name).is_ok() {
        let cached = opts.cache_dir.join(name);
        if cached.is_file() {
            return Ok(cached);
        }
    }
    if model.exists() {
        return Ok(model.to_path_buf()); // not a file: Model::load says what it is
    }
    bail!(
        "model {}: no such file, and not a known model name ({}; `lrp-heatmap models` lists them)",
        model.display(),
        names()
    )
}

fn norm_text(n: &Normalization) -> String {
    let f = |v: &[f32; 3]| v.map(|x| x.to_string()).join(",");
    format!("mean {} std {}", f(&n.mean), f(&n.std))
}

/// The `models` listing: every entry with its cache state, then other files
/// in the cache, then where the cache is.
pub fn list(cache_dir: &Path, out: &mut dyn Write) -> Result<()> {
    let mirror = cache::mirror_from_env();
    writeln!(
        out,
        "{:<20} {:<18} {:<12} {:<12} {:<12} description",
        "name", "state", "size", "input", "labels"
    )?;
    let mut registry_files = Vec::new();
    for e in ENTRIES {
        let (state, size) = match e.target(mirror.as_deref()) {
            None => (
                "bundled".to_string(),
                lrp_heatmap::model::BUNDLED_MODEL.len() as u64,
            ),
            Some(t) => {
                registry_files.push(t.file.clone());
                let state = match fetch::cache_state(&t, cache_dir) {
                    CacheState::Cached(_) => "cached".to_string(),
                    CacheState::Partial(n) => {
                        format!(
                            "partial {:.0}%",
                            100.0 * n as f64 / t.size.unwrap_or(1).max(1) as f64
                        )
                    }
                    CacheState::Damaged(_) => "damaged".to_string(),
                    CacheState::Missing => "not cached".to_string(),
                };
                (state, t.size.unwrap_or(0))
            }
        };
        let mib = format!("{:.1} MiB", size as f64 / (1024.0 * 1024.0));
        let input = format!("{}x{}x{}", e.input[0], e.input[1], e.input[2]);
        writeln!(
            out,
            "{:<20} {:<18} {:<12} {:<12} {:<12} {}",
            e.name,
            state,
            mib,
            input,
            e.labels.name(),
            e.description
        )?;
    }
    let norms: Vec<String> = ENTRIES.iter().map(|e| norm_text(&e.norm)).collect();
    if norms.iter().all(|n| *n == norms[0]) {
        writeln!(out, "input normalisation of all: {}", norms[0])?;
    } else {
        for (e, n) in ENTRIES.iter().zip(&norms) {
            writeln!(out, "input normalisation of {}: {n}", e.name)?;
        }
    }
    let mut others: Vec<(String, u64)> = std::fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let name = d.file_name().to_str()?.to_string();
            let meta = d.metadata().ok()?;
            (meta.is_file()
                && fetch::check_file_name(&name).is_ok()
                && !registry_files.contains(&name))
            .then_some((name, meta.len()))
        })
        .collect();
    others.sort();
    for (name, len) in others {
        writeln!(
            out,
            "also cached: {name} ({}), usable as --model {name}",
            describe_size(len)
        )?;
    }
    let from = if cache::non_empty(cache::CACHE_ENV).is_some() {
        format!(" (from {})", cache::CACHE_ENV)
    } else {
        String::new()
    };
    writeln!(out, "cache: {}{from}", cache_dir.display())?;
    if let Some(m) = mirror {
        writeln!(out, "mirror: {m} (from {})", cache::MIRROR_ENV)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg16_is_the_zoo_file() {
        let t = lookup("vgg16").unwrap().target(None).unwrap();
        // the ONNX model zoo's vgg16-7.onnx
        assert_eq!(t.file, "vgg16-7.onnx");
        assert_eq!(t.size, Some(553437328));
        assert_eq!(
            t.sha256,
            "f20805a3ecccaa88647bbab4ad011ff2412a9838485ea844de0fcbce349820b9"
        );
        assert!(t.urls[0].starts_with("https://"));
        assert_eq!(t.fetch_command, "lrp-heatmap fetch vgg16");
    }

    #[test]
    fn a_mirror_replaces_the_urls() {
        let t = lookup("vgg16-12")
            .unwrap()
            .target(Some("http://mirror.local/models/"))
            .unwrap();
        assert_eq!(t.urls, ["http://mirror.local/models/vgg16-12.onnx"]);
    }

    #[test]
    fn entries_are_well_formed() {
        for (i, e) in ENTRIES.iter().enumerate() {
            assert!(ENTRIES[..i].iter().all(|o| o.name != e.name), "{}", e.name);
            if let Some(t) = e.target(None) {
                fetch::parse_sha256(&t.sha256).unwrap();
                fetch::check_file_name(&t.file).unwrap();
                assert!(!t.urls.is_empty());
            }
        }
        assert_eq!(lookup(BUNDLED_NAME).unwrap().source, Source::Bundled);
        assert!(lookup(BUNDLED_NAME).unwrap().target(None).is_none());
    }

    #[test]
    fn every_entry_uses_the_default_normalisation() {
        // The CLI's --mean/--std default to these numbers and do not follow
        // the entry: an entry with other statistics needs that changed first.
        for e in ENTRIES {
            assert_eq!(e.norm, Normalization::default(), "{}", e.name);
        }
    }
}
