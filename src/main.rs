//! The `hotline` command line: serve, check-config, cdr export, recordings
//! verify, version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use hotline::config::Settings;
use hotline::store::export::{self, ExportError, Format};

#[derive(Parser)]
#[command(
    name = "hotline",
    version,
    about = "Real-time ACD/CTI telephony server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file [default: config/hotline.toml, else the embedded default]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print a one-line summary.
    CheckConfig {
        /// Configuration file [default: config/hotline.toml, else the embedded default]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Call detail records.
    Cdr {
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// Call recordings.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// Check every finished recording named in the call records against
    /// its file: a file missing or whose SHA-256 changed is printed, and
    /// the exit status is then 1. Works while the server runs.
    Verify {
        /// Configuration file naming the database (store.path) [default:
        /// config/hotline.toml, else the embedded default]
        #[arg(long, short, conflicts_with = "db")]
        config: Option<PathBuf>,
        /// The database file [default: store.path of the configuration]
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CdrCommand {
    /// Print the records of calls that ended in a time range, oldest first.
    ///
    /// Times (T) are RFC 3339 (2026-11-23T10:00:00Z), a date (2026-11-23,
    /// midnight UTC) or unix seconds. Works while the server runs.
    Export {
        /// Configuration file naming the database (store.path) [default:
        /// config/hotline.toml, else the embedded default]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The database file [default: store.path of the configuration]
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Calls that ended at or after T
        #[arg(long, value_name = "T", value_parser = export::parse_time)]
        since: Option<i64>,
        /// Calls that ended before T
        #[arg(long, value_name = "T", value_parser = export::parse_time)]
        until: Option<i64>,
        /// csv: a header row, then one row per call (RFC 4180); json: one
        /// object per line
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Settings::load(config.as_deref()) {
            Ok(settings) => match refuse_demo_exposure(&settings) {
                Some(code) => code,
                None => match hotline::media::load_prompts(&settings) {
                    Ok(prompts) => {
                        println!("{settings}, {} prompt(s)", prompts.len());
                        ExitCode::SUCCESS
                    }
                    Err(issues) => {
                        eprintln!(
                            "{}",
                            hotline::config::ConfigError::Invalid {
                                origin: settings.origin.clone(),
                                issues
                            }
                        );
                        ExitCode::FAILURE
                    }
                },
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Cdr {
            command:
                CdrCommand::Export {
                    config,
                    db,
                    since,
                    until,
                    format,
                },
        } => {
            if let (Some(since), Some(until)) = (since, until)
                && since >= until
            {
                usage_error("--since must be earlier than --until");
            }
            let path = match db {
                Some(path) => path,
                None => match Settings::load(config.as_deref()) {
                    Ok(settings) => settings.store.path,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let format = match format {
                ExportFormat::Csv => Format::Csv,
                ExportFormat::Json => Format::Json,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match export::export(&path, since, until, format, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                // The reader went away (`| head`): nothing more to say.
                Err(ExportError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Recordings {
            command: RecordingsCommand::Verify { config, db },
        } => verify_recordings(config, db),
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(code) = refuse_demo_exposure(&settings) {
                return code;
            }
            hotline::init_logging(&settings);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(hotline::serve(settings, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Demo secrets on a listener off loopback: each key is named, exit status 2.
fn refuse_demo_exposure(settings: &Settings) -> Option<ExitCode> {
    let exposure = settings.check_demo_exposure().err()?;
    eprintln!("{exposure}");
    Some(ExitCode::from(2))
}

/// `hotline recordings verify`.
fn verify_recordings(config: Option<PathBuf>, db: Option<PathBuf>) -> ExitCode {
    let path = match db {
        Some(path) => path,
        None => match Settings::load(config.as_deref()) {
            Ok(settings) => settings.store.path,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match hotline::recording::verify::verify(&path) {
        Ok(report) => {
            for finding in &report.findings {
                println!("{finding}");
            }
            let unfinished = if report.unfinished > 0 {
                format!(
                    "; {} recording(s) never finished (no checksum to check)",
                    report.unfinished
                )
            } else {
                String::new()
            };
            if report.findings.is_empty() {
                println!(
                    "{} recording(s) verified: all match their SHA-256{unfinished}",
                    report.checked
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{} of {} recording(s) missing or changed{unfinished}",
                    report.findings.len(),
                    report.checked
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exits with clap's usage error (status 2) for `hotline cdr export`.
fn usage_error(message: &str) -> ! {
    let kind = clap::error::ErrorKind::ArgumentConflict;
    let mut cli = Cli::command();
    match cli
        .find_subcommand_mut("cdr")
        .and_then(|cdr| cdr.find_subcommand_mut("export"))
    {
        Some(export) => export
            .clone()
            .bin_name("hotline cdr export")
            .error(kind, message)
            .exit(),
        None => cli.error(kind, message).exit(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
