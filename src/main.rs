fn main() {
    std::process::exit(aitbc_flow::cli::main());
}
