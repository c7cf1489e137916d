//! The emulator's `azcmagent` stand-in as a binary named `azcmagent`, for the agent's integration tests
//! (`cargo test` builds examples; tests point `AKS_FLEX_NODE_AZCMAGENT` at it).

#[tokio::main]
async fn main() {
    let code = azure_emulator::azcmagent::run(std::env::args_os().collect()).await;
    std::process::exit(code);
}
