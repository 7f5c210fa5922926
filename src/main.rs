use gpu_mlp::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts: give Mesa a valid XDG_RUNTIME_DIR if it lacks one (it would
    // print a warning on every device open; see the function). Every wgpu instance the library
    // creates calls this too; here it runs while the process has one thread.
    gpu_mlp::gpu::context::prepare_environment();
    let cli = Cli::parse_args();
    if !stdout_is_open() {
        eprintln!(
            "error: standard output is closed, so the results would be lost: \
             redirect it to a file, or with >/dev/null to discard them"
        );
        return ExitCode::FAILURE;
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`gpu-mlp --json | head -1`): stop quietly, with the status a
        // process killed by SIGPIPE has, as Unix tools do.
        Err(error) if error.is_broken_pipe() => ExitCode::from(128 + libc::SIGPIPE as u8),
        // The run has said where it stopped and how to resume.
        Err(gpu_mlp::error::Error::Interrupted { code, .. }) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether standard output can take the results. When a program starts with descriptor 1
/// closed (`gpu-mlp >&-`), Rust's runtime opens /dev/null there, read-write, so what is written
/// would vanish and the run would end with status 0. A shell's `>/dev/null` opens it write-only,
/// so only /dev/null opened read-write counts as closed.
fn stdout_is_open() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(null) = std::fs::metadata("/dev/null") else {
        return true;
    };
    // SAFETY: fstat writes into the zeroed struct we own; fcntl(F_GETFL) only reads flags.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(libc::STDOUT_FILENO, &mut stat) != 0 {
            return false;
        }
        let is_null = (stat.st_mode & libc::S_IFMT) == libc::S_IFCHR && stat.st_rdev == null.rdev();
        let flags = libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFL);
        !(is_null && flags != -1 && (flags & libc::O_ACCMODE) == libc::O_RDWR)
    }
}
