//! Model downloads against a real HTTP server on 127.0.0.1 run by each test
//! (hand-written HTTP/1.1 with byte ranges): a good file, a wrong checksum, a
//! connection dropped halfway, a stalled server, a redirect, a 404, two
//! processes at once, offline runs. After each case the cache holds the
//! verified file, or nothing at all. No test touches the internet.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use lrp_testkit::http::{file_names, tiny_model, Route, Server};
use sha2::{Digest, Sha256};

use crate::support::{repo, text, BIN};

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The binary with the cache in `cache` and no mirror, offline or proxy
/// settings from the outside.
fn lrp_cached(cache: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("LRP_HEATMAP_CACHE", cache);
    for v in [
        "LRP_HEATMAP_MIRROR",
        "LRP_HEATMAP_OFFLINE",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (status.code().unwrap_or(-1), text(&stdout), text(&stderr))
}

#[test]
fn fetch_by_url_verifies_caches_once_and_the_model_runs_from_the_cache() {
    let model = tiny_model();
    let sha = sha256_hex(&model);
    let server = Server::start(vec![("/zoo/tiny.onnx", Route::File(model.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = server.url("/zoo/tiny.onnx");

    let (code, out, err) = run(lrp_cached(&cache).args(["fetch", &url, "--sha256", &sha]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), cache.join("tiny.onnx").display().to_string());
    assert!(
        err.contains(&format!("verified tiny.onnx (sha256 {sha})")),
        "{err}"
    );
    assert_eq!(file_names(&cache), ["tiny.onnx"]);
    assert_eq!(std::fs::read(cache.join("tiny.onnx")).unwrap(), *model);
    assert_eq!(server.seen(), [("/zoo/tiny.onnx".to_string(), None)]);

    // again: verified from the cache, no request
    let (code, out2, err) = run(lrp_cached(&cache).args(["fetch", &url, "--sha256", &sha]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out2, out);
    assert!(err.contains("is cached and verified"), "{err}");
    assert_eq!(server.count("/zoo/tiny.onnx"), 1);

    // `models` lists it; `--model tiny.onnx` runs it from the cache, offline
    let (code, out, _) = run(lrp_cached(&cache).arg("models"));
    assert_eq!(code, 0);
    assert!(out.contains("also cached: tiny.onnx"), "{out}");
    let outdir = dir.path().join("out");
    let (code, out, err) = run(lrp_cached(&cache)
        .arg(repo("images/cat.jpg"))
        .args(["--model", "tiny.onnx", "--rule", "zplus", "--offline", "-o"])
        .arg(&outdir));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relevance sum"), "{out}");
    assert!(outdir.join("cat.zplus.png").is_file());
    assert_eq!(server.count("/zoo/tiny.onnx"), 1);
}

#[test]
fn a_wrong_checksum_fails_and_leaves_nothing() {
    let model = tiny_model();
    let mut other = (*model).clone();
    other[1000] ^= 1; // same size, different content
    let server = Server::start(vec![("/bad.onnx", Route::File(Arc::new(other)))]);
    let dir = tempfile::tempdir().unwrap();
    let sha = sha256_hex(&model);
    let (code, out, err) = run(lrp_cached(dir.path()).args([
        "fetch",
        &server.url("/bad.onnx"),
        "--sha256",
        &sha,
        "--size",
        &model.len().to_string(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains(&format!("SHA-256 mismatch: expected {sha}")),
        "{err}"
    );
    assert!(err.contains("the download was deleted"), "{err}");
    assert_eq!(
        err.trim().lines().last().unwrap().matches("error:").count(),
        1
    );
    assert!(
        file_names(dir.path()).is_empty(),
        "{:?}",
        file_names(dir.path())
    );
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let model = tiny_model();
    let half = model.len() / 2;
    let server = Server::start(vec![(
        "/m.onnx",
        Route::Dropping {
            data: model.clone(),
            cut: half,
            drops: 1,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(lrp_cached(dir.path()).args([
        "fetch",
        &server.url("/m.onnx"),
        "--sha256",
        &sha256_hex(&model),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("trying again (attempt 2 of 3)"), "{err}");
    assert!(
        err.contains(&format!("resuming m.onnx at byte {half}")),
        "{err}"
    );
    assert_eq!(
        server.seen(),
        [
            ("/m.onnx".to_string(), None),
            ("/m.onnx".to_string(), Some(format!("bytes={half}-")))
        ]
    );
    assert_eq!(file_names(dir.path()), ["m.onnx"]);
    assert_eq!(std::fs::read(dir.path().join("m.onnx")).unwrap(), *model);
}

#[test]
fn an_interrupted_download_is_kept_and_the_next_run_resumes_it() {
    let model = tiny_model();
    // every attempt of the first run (3) loses the connection after 1000 bytes
    let server = Server::start(vec![(
        "/m.onnx",
        Route::Dropping {
            data: model.clone(),
            cut: 1000,
            drops: 3,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let sha = sha256_hex(&model);
    let url = server.url("/m.onnx");
    let (code, _, err) = run(lrp_cached(dir.path()).args(["fetch", &url, "--sha256", &sha]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("3000 bytes are kept in"), "{err}");
    assert!(
        err.contains(&format!("lrp-heatmap fetch {url} --sha256 {sha}")),
        "{err}"
    );
    assert_eq!(file_names(dir.path()), ["m.onnx.part"]);
    assert_eq!(
        std::fs::read(dir.path().join("m.onnx.part")).unwrap(),
        model[..3000]
    );

    let (code, _, err) = run(lrp_cached(dir.path()).args(["fetch", &url, "--sha256", &sha]));
    assert_eq!(code, 0, "{err}");
    let ranges: Vec<Option<String>> = server.seen().into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=1000-".into()),
            Some("bytes=2000-".into()),
            Some("bytes=3000-".into())
        ]
    );
    assert_eq!(file_names(dir.path()), ["m.onnx"]);
    assert_eq!(std::fs::read(dir.path().join("m.onnx")).unwrap(), *model);
}

#[test]
fn not_found_fails_clearly_and_leaves_nothing() {
    let server = Server::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/missing.onnx");
    let (code, _, err) =
        run(lrp_cached(dir.path()).args(["fetch", &url, "--sha256", &"a".repeat(64)]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{url}: HTTP 404 Not Found")), "{err}");
    assert!(err.contains("missing file missing.onnx"), "{err}");
    // a 404 is not retried
    assert_eq!(server.count("/missing.onnx"), 1);
    assert!(
        file_names(dir.path()).is_empty(),
        "{:?}",
        file_names(dir.path())
    );
}

#[test]
fn redirects_are_followed() {
    let model = tiny_model();
    let server = Server::start(vec![
        ("/old/tiny.onnx", Route::Redirect("/new/tiny.onnx".into())),
        ("/new/tiny.onnx", Route::File(model.clone())),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(lrp_cached(dir.path()).args([
        "fetch",
        &server.url("/old/tiny.onnx"),
        "--sha256",
        &sha256_hex(&model),
        "--name",
        "renamed.onnx",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.count("/new/tiny.onnx"), 1);
    assert_eq!(file_names(dir.path()), ["renamed.onnx"]);
}

#[test]
fn registry_names_download_from_the_mirror_on_first_use_and_check_the_size() {
    // The mirror serves a file that is not the 553437328-byte vgg16-7.onnx:
    // refused from its Content-Length before any byte is stored.
    let server = Server::start(vec![("/mirror/vgg16-7.onnx", Route::File(tiny_model()))]);
    let dir = tempfile::tempdir().unwrap();
    let mirror = server.url("/mirror/");
    let (code, _, err) = run(lrp_cached(dir.path())
        .env("LRP_HEATMAP_MIRROR", &mirror)
        .arg(repo("images/cat.jpg"))
        .args(["--model", "vgg16", "--rule", "zplus"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("expected 553437328: not the right file"),
        "{err}"
    );
    assert!(err.contains("`lrp-heatmap fetch vgg16`"), "{err}");
    assert_eq!(server.seen(), [("/mirror/vgg16-7.onnx".to_string(), None)]);
    assert!(
        file_names(dir.path()).is_empty(),
        "{:?}",
        file_names(dir.path())
    );

    let (code, _, err) = run(lrp_cached(dir.path())
        .env("LRP_HEATMAP_MIRROR", &mirror)
        .args(["fetch", "vgg16-12"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    assert_eq!(server.count("/mirror/vgg16-12.onnx"), 1);
    assert!(file_names(dir.path()).is_empty());
}

#[test]
fn offline_never_touches_the_network_and_says_what_to_fetch() {
    let server = Server::start(vec![("/vgg16-7.onnx", Route::File(tiny_model()))]);
    let dir = tempfile::tempdir().unwrap();
    let mirror = server.url("");
    let cat = repo("images/cat.jpg");
    let cat = cat.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (
            vec![cat, "--model", "vgg16", "--offline"],
            None,
            "--offline",
        ),
        (
            vec![cat, "--model", "vgg16"],
            Some("1"),
            "LRP_HEATMAP_OFFLINE=1",
        ),
        (
            vec!["compare", cat, "--model", "vgg16", "--offline"],
            None,
            "--offline",
        ),
        (
            vec!["fetch", "vgg16"],
            Some("true"),
            "LRP_HEATMAP_OFFLINE=1",
        ),
    ];
    for (args, env, why) in cases {
        let mut c = lrp_cached(dir.path());
        c.env("LRP_HEATMAP_MIRROR", &mirror).args(&args);
        if let Some(v) = env {
            c.env("LRP_HEATMAP_OFFLINE", v);
        }
        let (code, _, err) = run(&mut c);
        assert_eq!(code, 2, "{args:?}: {err}");
        let err = err.trim();
        assert_eq!(err.lines().count(), 1, "{err}");
        for want in [
            "model vgg16 is not in the cache",
            &format!("downloading is off ({why})"),
            "missing file vgg16-7.onnx (553437328 bytes, 527.8 MiB, sha256 f20805a3",
            &format!("in {}", dir.path().display()),
            "fetch it with `lrp-heatmap fetch vgg16`",
        ] {
            assert!(err.contains(want), "{args:?}: '{want}' not in: {err}");
        }
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    assert!(file_names(dir.path()).is_empty());
}

#[test]
fn models_lists_the_registry_with_cache_states() {
    let dir = tempfile::tempdir().unwrap();
    // an interrupted vgg16-12 download of 1/4 of its 553437752 bytes
    let part = std::fs::File::create(dir.path().join("vgg16-12.onnx.part")).unwrap();
    part.set_len(553437752 / 4).unwrap();
    let (code, out, err) = run(lrp_cached(dir.path()).arg("models"));
    assert_eq!(code, 0, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    assert!(line("efficientnet-lite0").contains("bundled"), "{out}");
    let vgg = line("vgg16");
    for want in [
        "not cached",
        "527.8 MiB",
        "3x224x224",
        "imagenet-1k",
        "vgg16-7",
    ] {
        assert!(vgg.contains(want), "{want}: {vgg}");
    }
    assert!(line("vgg16-12").contains("partial 25%"), "{out}");
    assert!(
        out.contains("mean 0.485,0.456,0.406 std 0.229,0.224,0.225"),
        "{out}"
    );
    assert!(out.contains(&format!(
        "cache: {} (from LRP_HEATMAP_CACHE)",
        dir.path().display()
    )));
}

#[test]
fn two_processes_fetching_the_same_file_download_it_once() {
    let model = tiny_model();
    // about 2 s per download, so that the two runs overlap
    let server = Server::start(vec![(
        "/slow.onnx",
        Route::Slow {
            data: model.clone(),
            chunks: 20,
            pause: Duration::from_millis(100),
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let (url, sha) = (server.url("/slow.onnx"), sha256_hex(&model));
    let spawn = || {
        lrp_cached(dir.path())
            .args(["fetch", &url, "--sha256", &sha])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err = |o: &Output| text(&o.stderr);
    assert!(a.status.success(), "{}", err(&a));
    assert!(b.status.success(), "{}", err(&b));
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(server.count("/slow.onnx"), 1);
    let waited = [&a, &b]
        .iter()
        .filter(|o| {
            err(o).contains("waiting for another lrp-heatmap process downloading slow.onnx")
        })
        .count();
    assert_eq!(waited, 1, "{} / {}", err(&a), err(&b));
    assert_eq!(file_names(dir.path()), ["slow.onnx"]);
    assert_eq!(std::fs::read(dir.path().join("slow.onnx")).unwrap(), *model);
}
