//! `paywall`: sell any HTTP API with x402 and MPP on Stellar, from a routes file.
//!
//! `paywall check <routes.toml>` reads a routes file and prints what it sells, or refuses it
//! with what is wrong (the gateway that serves it comes next).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paywall::routes::{PriceRule, Routes};

#[derive(Parser)]
#[command(name = "paywall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a routes file and prints what it sells, or what is wrong with it.
    Check {
        /// The routes file (TOML).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { file } => check(&file),
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("paywall: {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let routes = match Routes::parse(&text) {
        Ok(routes) => routes,
        Err(error) => {
            eprintln!("paywall: {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    println!("upstream {}", routes.upstream);
    for route in &routes.routes {
        let method = route.method.as_ref().map_or("*", http::Method::as_str);
        let price = match route.price {
            PriceRule::Free => "free".to_owned(),
            PriceRule::Fixed(atomic) => format!("{atomic} atomic"),
            PriceRule::PerKib { base, per_kib, .. } => {
                format!("{base} + {per_kib} a KiB atomic")
            }
        };
        println!(
            "{method:7} {:30} {price:28} {:?} {:?}",
            route.path.as_str(),
            route.intents,
            route.settle
        );
    }
    ExitCode::SUCCESS
}
