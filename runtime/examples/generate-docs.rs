//! Writes `edgefn`'s man pages (`edgefn.1`, `edgefn-run.1`, ...) and its bash, zsh
//! and fish completions into OUTDIR, from the same command-line declaration the
//! binary parses: `cargo run --example generate-docs -- OUTDIR`.
//! `runtime/packaging/build-deb.sh` runs it for the package.

// The binary's own declaration; the parsers it holds are used by the binary only.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run --example generate-docs -- OUTDIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&out)?;
    let command = cli::Cli::command();
    clap_mangen::generate_to(command.clone(), &out)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), "edgefn", &out)?;
    }
    Ok(())
}
