//! The `switchyard` command: everything is in the library.

fn main() -> std::process::ExitCode {
    switchyard::main()
}
