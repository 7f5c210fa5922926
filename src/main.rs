use gpu_mlp::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Mesa's Vulkan loader prints "error: XDG_RUNTIME_DIR is invalid" when it is unset (as on
    // a headless server), though we never open a window. Point it at the temp folder first,
    // while the process has one thread.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    match cli::run(Cli::parse_args()) {
        Ok(()) => ExitCode::SUCCESS,
        // The run has said where it stopped and how to resume.
        Err(gpu_mlp::error::Error::Interrupted { code, .. }) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
