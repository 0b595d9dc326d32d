//! The `tollgate` command: parses the command line and calls into the library. Exit codes live
//! here: 0 success, 1 runtime failure, 2 invalid configuration.

// The public listener's per-request future (router or proxy, unboxed) is deeper than the
// default limit lets the compiler lay out.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// OpenID Connect gateway: forward-auth server, authenticating reverse proxy and token service.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configured roles until SIGTERM or SIGINT, then drain and exit.
    Serve {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the whole system on loopback with a built-in provider and demo users.
    Demo {
        /// Token service and forward-auth listener.
        #[arg(long, default_value = "127.0.0.1:4180")]
        listen: String,
        /// The demo app.
        #[arg(long, default_value = "127.0.0.1:4181")]
        app_listen: String,
        /// Metrics and health.
        #[arg(long, default_value = "127.0.0.1:8080")]
        admin_listen: String,
    },
    /// Validate a config and print every problem with its key path.
    Check {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Read a secret or password from standard input and print its argon2id hash.
    HashSecret,
}

fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

fn init_logging(
    env: &BTreeMap<String, String>,
    format: tollgate::config::LogFormat,
) -> tollgate::logging::LogGuard {
    use tollgate::config::LogFormat;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    tollgate::logging::init(env.get("TOLLGATE_LOG").map_or("info", String::as_str), json)
}

/// The config file's text, or the problem naming it.
fn read_text(path: &Path) -> Result<String, tollgate::config::ConfigProblem> {
    tollgate::named_file::read_to_string(path).map_err(|error| tollgate::config::ConfigProblem {
        path: path.display().to_string(),
        message: format!("cannot read: {error}"),
    })
}

/// A valid config, with the warning for a file that gives secrets inline and that every user
/// may read (from the text the config was read from).
struct Loaded {
    config: tollgate::config::Config,
    readable_file_warning: Option<String>,
}

/// Reads and validates the config file (as at start, for a reload): the config, or every
/// problem.
fn read_config(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Loaded, Vec<tollgate::config::ConfigProblem>> {
    let text = read_text(path).map_err(|problem| vec![problem])?;
    Ok(Loaded {
        config: tollgate::config::load(&text, env)?,
        readable_file_warning: tollgate::config::readable_file_warning(path, &text),
    })
}

fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Loaded, ExitCode> {
    read_config(path, env).map_err(|problems| {
        for problem in &problems {
            eprintln!("{problem}");
        }
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        ExitCode::from(2)
    })
}

/// The SIGTERM stream, where there is one.
#[cfg(unix)]
type Terminations = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Terminations = ();

fn terminations() -> Terminations {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    }
}

/// Resolves at the next SIGTERM or Ctrl-C.
async fn shutdown_signal(mut terminations: Terminations) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match &mut terminations {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = terminations;
        let _ = interrupt.await;
    }
}

/// The signals `serve` acts on, listened for before anything else it does: the default
/// action of a SIGHUP (a secret rotated while Tollgate reads its config and starts) is the
/// end of the process, and a SIGTERM once it serves must drain, not kill it.
struct Signals {
    hangups: Hangups,
    terminations: Terminations,
}

/// The SIGHUP stream, where there is one.
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading is off");
                None
            }
        }
    }
}

/// Resolves at the next SIGHUP; never where there is none.
async fn hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups
        && signal.recv().await.is_some()
    {
        return;
    }
    let _ = hangups;
    std::future::pending().await
}

/// SIGHUP: the file is read again with the same environment overrides and validation as at
/// start, and so are the system's trusted roots; `reload` logs and counts the outcome.
async fn reload(running: &tollgate::app::RunningApp, path: &Path, env: &BTreeMap<String, String>) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    tollgate::tls::read_system_roots_again();
    match read_config(path, env) {
        Ok(loaded) => {
            if running.reload(loaded.config).await.is_ok()
                && let Some(warning) = loaded.readable_file_warning
            {
                tracing::warn!(%warning, "unsafe setting");
            }
        }
        Err(problems) => running.refuse(problems),
    }
}

async fn serve(
    config: tollgate::config::Config,
    path: &Path,
    env: &BTreeMap<String, String>,
    signals: Signals,
) -> anyhow::Result<()> {
    // Listened for before the config was read: a SIGHUP while starting is kept for the loop
    // below, never lost.
    let Signals {
        mut hangups,
        terminations,
    } = signals;
    let mut running =
        tollgate::app::start(config, Arc::new(tollgate::clock::SystemClock), None, None).await?;
    let shutdown = shutdown_signal(terminations);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = running.wait() => {
                result.context("listener failed")?;
                break;
            }
            () = &mut shutdown => {
                tracing::info!("shutting down; draining in-flight requests");
                break;
            }
            () = hangup(&mut hangups) => reload(&running, path, env).await,
        }
    }
    running.shutdown().await.context("draining")?;
    Ok(())
}

async fn demo(listen: &str, app_listen: &str, admin_listen: &str) -> anyhow::Result<()> {
    let bind = |address: String| async move {
        tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))
    };
    let public = bind(listen.to_owned()).await?;
    let app = bind(app_listen.to_owned()).await?;
    let admin = bind(admin_listen.to_owned()).await?;
    // The demo's users, clients and keys are for trying it out, over plain HTTP: said once
    // where another machine can reach them.
    for listener in [&public, &app, &admin] {
        if let Ok(address) = listener.local_addr()
            && !address.ip().is_loopback()
        {
            tracing::warn!(
                %address,
                "the demo listens beyond loopback: other machines can reach its demo users, \
                 its metrics and its app, over plain HTTP"
            );
        }
    }
    let demo =
        tollgate::demo::start(public, app, admin, Arc::new(tollgate::clock::SystemClock)).await?;
    println!("Tollgate demo is running.\n");
    println!("  Open the demo app:    http://{}/", demo.app_addr);
    println!("                        (behind forward-auth: the app asks Tollgate's /auth)");
    println!(
        "  The same app behind Tollgate's reverse proxy: http://{}/app/",
        demo.public_addr
    );
    println!(
        "  Token service:        http://{}/.well-known/openid-configuration",
        demo.public_addr
    );
    if let Some(admin) = demo.tollgate.admin_addr {
        let admin = tollgate::demo::linkable(admin);
        println!("  Metrics:              http://{admin}/metrics");
    }
    println!("\n  Sign in as one of these users (passwords are new every run):");
    for user in &demo.users {
        println!("    {:<8} {}", user.username, user.password);
    }
    println!("\nPress Ctrl-C to stop.");
    shutdown_signal(terminations()).await;
    demo.shutdown().await?;
    Ok(())
}

/// What `check` and `serve` say about a variable spelt like an override of no section.
const IGNORED_VARIABLE: &str = "ignored: not an override, which is spelt \
     TOLLGATE_<SECTION>__<KEY> with a config section and two underscores between segments \
     (TOLLGATE_ROUTE__0__ON_UNAUTHENTICATED)";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = environment();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check { config } => match load(&config, &env) {
            Ok(loaded) => {
                for warning in tollgate::config::warnings(&loaded.config) {
                    eprintln!("warning: {warning}");
                }
                if let Some(warning) = loaded.readable_file_warning {
                    eprintln!("warning: {warning}");
                }
                for variable in tollgate::config::ignored_variables(&env) {
                    eprintln!("warning: {variable}: {IGNORED_VARIABLE}");
                }
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config: path } => {
            let signals = {
                let _runtime = runtime.enter();
                Signals {
                    hangups: hangups(),
                    terminations: terminations(),
                }
            };
            let Loaded {
                config,
                readable_file_warning,
            } = match load(&path, &env) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let _log = init_logging(&env, config.server.log_format);
            for warning in tollgate::config::warnings(&config) {
                tracing::warn!(%warning, "unsafe setting");
            }
            if let Some(warning) = readable_file_warning {
                tracing::warn!(%warning, "unsafe setting");
            }
            for variable in tollgate::config::ignored_variables(&env) {
                tracing::warn!(%variable, "{IGNORED_VARIABLE}");
            }
            match runtime.block_on(serve(config, &path, &env, signals)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "tollgate stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            listen,
            app_listen,
            admin_listen,
        } => {
            let _log = init_logging(&env, tollgate::config::LogFormat::Text);
            match runtime.block_on(demo(&listen, &app_listen, &admin_listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("demo failed: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashSecret => {
            let secret = match read_secret() {
                Ok(secret) => secret,
                Err(error) => {
                    eprintln!("cannot read standard input: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let secret = secret.trim_end_matches(['\r', '\n']);
            // An empty input is a pipe from an unset variable or a missing file, never a
            // secret: its hash would let an empty secret in.
            if secret.trim().is_empty() {
                eprintln!("no secret on standard input: nothing hashed");
                return ExitCode::FAILURE;
            }
            match tollgate::hash_password(secret) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("cannot hash: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// One line of standard input. On a terminal, after a prompt on standard error and with the
/// terminal's echo off while it is typed, so the secret is neither on the screen nor in its
/// scrollback or a session recording (and nobody pipes it in from `echo`, into the shell's
/// history, for want of a prompt).
fn read_secret() -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_bounded_line(&stdin);
    }
    // Echo off before the prompt: what is typed (or pasted) as soon as it shows stays unseen.
    let before = tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    eprint!("Secret to hash (not shown): ");
    let read = read_bounded_line(&stdin);
    let restored = tcsetattr(&stdin, OptionalActions::Now, &before);
    eprintln!();
    let secret = read?;
    restored?;
    Ok(secret)
}

/// The most a secret to hash may hold: far beyond any password or client secret, and what
/// `hash-secret` reads of a line that does not end (`/dev/zero`) before it gives up.
const SECRET_MOST: usize = 4096;

/// One line of `stdin`, refused (`InvalidData`) when it is longer than [`SECRET_MOST`] bytes
/// (its `\r\n` or `\n` not counted) rather than read until memory runs out, or cut short and
/// hashed as another secret; and when it is not UTF-8.
fn read_bounded_line(stdin: &std::io::Stdin) -> std::io::Result<String> {
    use std::io::{BufRead as _, Read as _};
    let mut line = Vec::new();
    stdin
        .lock()
        .take(SECRET_MOST as u64 + 2)
        .read_until(b'\n', &mut line)?;
    let secret = line.strip_suffix(b"\n").unwrap_or(&line);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() > SECRET_MOST {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the secret is longer than {SECRET_MOST} bytes"),
        ));
    }
    String::from_utf8(line).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "the secret is not UTF-8")
    })
}
