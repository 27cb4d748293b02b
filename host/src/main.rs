fn main() -> std::process::ExitCode {
    replicator::cli::main()
}
