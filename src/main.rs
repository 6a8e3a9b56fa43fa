//! The `lrp-heatmap` command: parses, runs, reports.

mod app;

use app::cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Exit code when every input was explained.
const EXIT_OK: u8 = 0;
/// Exit code when some input failed (the others were still processed).
const EXIT_INPUT_FAILED: u8 = 1;
/// Exit code for usage and model errors.
const EXIT_USAGE: u8 = 2;

/// glibc's malloc hands blocks above its mmap threshold (128 KiB, rising
/// with use) back to the system when freed, so passes faulted fresh, zeroed
/// pages in for their tensors. With the threshold at glibc's maximum (32
/// MiB; larger blocks, the big weights, are still mapped) and trimming only
/// beyond 1 GiB, what is freed stays in the heap for the next layer and image
/// (VGG16's peak memory: 1.39 GB before and after; 8-10% faster, `bench`).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of glibc's tuning parameters, before any
    // other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    // panics under a boundary become errors, printed by us on one line
    lrp_heatmap::guard::install_hook();
    let args = match cli::parse() {
        Ok(a) => a,
        // a value out of range or unparsable: clap's first line, which names
        // the flag and the value (not its usage hint)
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
            ) =>
        {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: invalid value"));
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    let offline = args.offline();
    let warnings = args.warnings();
    let job = lrp_heatmap::guard::boundary("lrp-heatmap", || {
        args.into_job().and_then(|j| resolve_models(j, offline))
    });
    let job = match job {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // the last resort: each subcommand catches the panics of its images and
    // models itself; anything left (a bug in the command's own code) still
    // gives one error line and exit code 2, never 101
    // the command runs on a worker of its own pool: the many short parallel
    // steps of a pass then start from a worker (work stealing) instead of
    // waking the pool from outside and parking the main thread each time
    // (about 10% on EfficientNet-Lite0, measured with bench)
    let run = || match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(|| dispatch(job)),
        Err(_) => dispatch(job),
    };
    lrp_heatmap::guard::boundary("lrp-heatmap", || Ok(run())).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Runs one subcommand.
fn dispatch(job: cli::Job) -> ExitCode {
    match job {
        cli::Job::Explain(cfg) => explain(cfg),
        cli::Job::Compare(cfg) => compare(cfg),
        cli::Job::Evaluate(cfg) => evaluate(cfg),
        cli::Job::Bench(cfg) => report_usage_error(crate::app::commands::bench::run_bench(
            &cfg,
            &mut std::io::stdout(),
        )),
        cli::Job::Models => report_usage_error(models()),
        cli::Job::Fetch(target) => report_usage_error(fetch(&target)),
        cli::Job::Inspect(cfg, verify) => inspect(cfg, verify),
        cli::Job::Check(cfg, label) => check(cfg, label),
    }
}

/// Whether `e` comes from writing to a closed pipe (`lrp-heatmap ... | head`):
/// the reader has all it wants, so the run ends quietly with exit code 0.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error line and exit code 2, or exit code 0 for a closed pipe.
fn usage_error(e: anyhow::Error) -> ExitCode {
    if broken_pipe(&e) {
        return ExitCode::from(EXIT_OK);
    }
    eprintln!("error: {e:#}");
    ExitCode::from(EXIT_USAGE)
}

/// `check`; a class given by label is looked up in the loaded model's labels.
fn check(
    mut cfg: lrp_heatmap::analyzers::selfcheck::CheckConfig,
    label: Option<String>,
) -> ExitCode {
    let run = |cfg: &mut lrp_heatmap::analyzers::selfcheck::CheckConfig| {
        let Some(q) = &label else {
            return lrp_heatmap::analyzers::selfcheck::run_check(cfg, &mut std::io::stdout());
        };
        let model = lrp_heatmap::model::LoadOptions {
            size: cfg.input_size,
            ..Default::default()
        }
        .load(&cfg.model)?;
        let labels = crate::app::labels::for_classes(model.classes);
        let class = crate::app::labels::find_class(&labels, q)
            .map_err(|e| anyhow::anyhow!("--class {q}: {e} (model {})", cfg.model.display()))?;
        if let Some(note) = crate::app::labels::also_matching(&labels, q) {
            eprintln!("note: {note}");
        }
        cfg.options.class = Some(class);
        lrp_heatmap::analyzers::selfcheck::run_check_on(&model, cfg, &mut std::io::stdout())
    };
    match run(&mut cfg) {
        Ok(true) => ExitCode::from(EXIT_OK),
        Ok(false) => {
            eprintln!(
                "error: model {}: the backward pass disagrees with the forward pass",
                cfg.model.display()
            );
            ExitCode::from(EXIT_INPUT_FAILED)
        }
        Err(e) => usage_error(e),
    }
}

fn inspect(cfg: crate::app::commands::inspect::InspectConfig, verify: bool) -> ExitCode {
    match crate::app::commands::inspect::run_inspect(&cfg, &mut std::io::stdout()) {
        Ok(true) if verify => {
            let _ = writeln!(std::io::stdout());
            check(
                lrp_heatmap::analyzers::selfcheck::CheckConfig {
                    model: cfg.model.clone(),
                    image: None,
                    input_size: cfg.input_size,
                    options: Default::default(),
                    json: false,
                },
                None,
            )
        }
        Ok(true) => ExitCode::from(EXIT_OK),
        Ok(false) => {
            eprintln!("error: model {} cannot be explained", cfg.model.display());
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => usage_error(e),
    }
}

/// Exit code 0, or 2 after printing the error.
fn report_usage_error(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => usage_error(e),
    }
}

/// Turns known model names in `--model` into cached files, downloading them
/// on first use (with a progress bar on a terminal).
fn resolve_models(job: cli::Job, offline: bool) -> anyhow::Result<cli::Job> {
    use crate::app::registry::resolve;
    let stderr = std::io::stderr();
    let bar = stderr.is_terminal();
    Ok(match job {
        cli::Job::Explain(mut c) => {
            c.model = resolve(&c.model, offline, bar && !c.quiet, &mut stderr.lock())?;
            cli::Job::Explain(c)
        }
        cli::Job::Compare(mut c) => {
            c.model = resolve(&c.model, offline, bar, &mut stderr.lock())?;
            cli::Job::Compare(c)
        }
        cli::Job::Evaluate(mut c) => {
            c.model = resolve(&c.model, offline, bar, &mut stderr.lock())?;
            cli::Job::Evaluate(c)
        }
        cli::Job::Bench(mut c) => {
            c.model = resolve(&c.model, offline, bar, &mut stderr.lock())?;
            cli::Job::Bench(c)
        }
        other => other,
    })
}

fn models() -> anyhow::Result<()> {
    let dir = crate::app::cache::cache_dir()?;
    crate::app::registry::list(&dir, &mut std::io::stdout().lock())
}

fn fetch(target: &crate::app::fetch::Target) -> anyhow::Result<()> {
    let stderr = std::io::stderr();
    let opts = crate::app::fetch::Options::from_env(false, stderr.is_terminal())?;
    let path = crate::app::fetch::ensure(target, &opts, true, &mut stderr.lock())?;
    writeln!(std::io::stdout(), "{}", path.display())?;
    Ok(())
}

/// The end of a run that writes whole-run files (`compare`, `evaluate`):
/// their paths on stdout, one a line, exit 0; 1 when some inputs failed; 2
/// when nothing could be done.
fn report_file_run(run: anyhow::Result<crate::app::commands::FileRun>) -> ExitCode {
    match run {
        Ok((paths, failed)) => {
            let mut stdout = std::io::stdout();
            for path in paths {
                if writeln!(stdout, "{}", path.display()).is_err() {
                    break;
                }
            }
            if failed.is_empty() {
                ExitCode::from(EXIT_OK)
            } else {
                eprintln!("{} inputs failed", failed.len());
                ExitCode::from(EXIT_INPUT_FAILED)
            }
        }
        Err(e) => usage_error(e),
    }
}

fn compare(cfg: crate::app::commands::compare::CompareConfig) -> ExitCode {
    let stderr = std::io::stderr();
    report_file_run(
        crate::app::commands::compare::run_compare(&cfg, &mut stderr.lock())
            .map(|(path, failed)| (vec![path], failed)),
    )
}

fn evaluate(cfg: crate::app::commands::evaluate::EvaluateConfig) -> ExitCode {
    let run = || {
        let stderr = std::io::stderr();
        let progress = stderr.is_terminal();
        crate::app::commands::evaluate::run_evaluate(
            &cfg,
            &mut std::io::stdout().lock(),
            &mut stderr.lock(),
            progress,
        )
    };
    // --jobs: a pool of that many threads for the whole run
    let result = match cfg.jobs {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| anyhow::anyhow!("starting {n} threads for --jobs: {e}"))
            .and_then(|pool| pool.install(run)),
        None => run(),
    };
    report_file_run(result)
}

fn explain(cfg: crate::app::commands::explain::Config) -> ExitCode {
    if let Some(dir) = &cfg.out_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: cannot create output folder {}: {e}", dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let progress = !cfg.quiet && stderr.is_terminal();
    match crate::app::commands::explain::run(&cfg, &mut stdout.lock(), &mut stderr.lock(), progress)
    {
        Ok(summary) => {
            let total = summary.done + summary.skipped + summary.failed.len();
            if !summary.failed.is_empty() || (total > 1 && !cfg.quiet) {
                let mut e = stderr.lock();
                let _ = writeln!(
                    e,
                    "done {}, skipped {}, failed {} in {:.2} s",
                    summary.done,
                    summary.skipped,
                    summary.failed.len(),
                    summary.seconds
                );
                for (path, _) in &summary.failed {
                    let _ = writeln!(e, "failed: {}", path.display());
                }
            }
            if summary.failed.is_empty() {
                ExitCode::from(EXIT_OK)
            } else {
                ExitCode::from(EXIT_INPUT_FAILED)
            }
        }
        Err(e) => usage_error(e),
    }
}
