//! The `lrp-heatmap` command: parses, runs, reports.

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

/// Exit code when every input was explained.
const EXIT_OK: u8 = 0;
/// Exit code when some input failed (the others were still processed).
const EXIT_INPUT_FAILED: u8 = 1;
/// Exit code for usage and model errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let job = match args.into_job() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match job {
        cli::Job::Explain(cfg) => explain(cfg),
        cli::Job::Compare(cfg) => compare(cfg),
        cli::Job::Demo(cfg) => {
            match lrp_heatmap::deep_taylor::report(&cfg, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        cli::Job::Bench(cfg) => match lrp_heatmap::bench::run_bench(&cfg, &mut std::io::stdout()) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

fn compare(cfg: lrp_heatmap::compare::CompareConfig) -> ExitCode {
    let stderr = std::io::stderr();
    match lrp_heatmap::compare::run_compare(&cfg, &mut stderr.lock()) {
        Ok((path, failed)) => {
            println!("{}", path.display());
            if failed.is_empty() {
                ExitCode::from(EXIT_OK)
            } else {
                eprintln!("{} inputs failed", failed.len());
                ExitCode::from(EXIT_INPUT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn explain(cfg: lrp_heatmap::app::Config) -> ExitCode {
    if let Some(dir) = &cfg.out_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: cannot create output folder {}: {e}", dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let progress = !cfg.quiet && stderr.is_terminal();
    match lrp_heatmap::app::run(&cfg, &mut stdout.lock(), &mut stderr.lock(), progress) {
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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
