fn main() {
    std::process::exit(runbook::cli::main_entry());
}
