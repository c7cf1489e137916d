//! Azure: cloud endpoints, credentials, the ARM client, Arc (`azcmagent`), RBAC role assignments and AKS
//! cluster credentials. DESIGN.md §5.
//!
//! Nothing here reads the config file or the process environment directly: callers build an
//! [`settings::AzureSettings`] (from the config and an environment lookup) and hand it in, so tests and the
//! scale benchmark can run many independent agents in one process.

pub mod aks;
pub mod arc;
pub mod arm;
pub mod cloud;
pub mod credential;
pub mod http;
pub mod permissions;
pub mod roles;
pub mod settings;

/// Everything that can go wrong talking to Azure. Every message says what to do about it and never
/// contains a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Bad settings (URL scheme, CA bundle, missing value).
    #[error("{0}")]
    Config(String),
    /// Getting a token failed; the message explains the fix.
    #[error("authentication failed ({credential}): {message}")]
    Auth { credential: String, message: String },
    /// An ARM error response, mapped to an actionable message.
    #[error("{0}")]
    Arm(#[from] arm::ArmError),
    /// A program that calls ARM itself (`azcmagent`) failed. `arm` is the ARM error its output reported,
    /// when it names one ([`arm::ArmError::reported_by`]): decisions use that, never words in `message`.
    #[error("{message}")]
    Program {
        message: String,
        arm: Option<Box<arm::ArmError>>,
    },
    /// Network-level failure after retries.
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    /// Waited for something that did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// Anything else, already worded for the operator.
    #[error("{0}")]
    Other(String),
}

impl AzureError {
    pub fn auth(credential: impl Into<String>, message: impl Into<String>) -> Self {
        AzureError::Auth {
            credential: credential.into(),
            message: message.into(),
        }
    }

    /// The ARM error: an ARM response, or one a program reported.
    pub fn arm_error(&self) -> Option<&arm::ArmError> {
        match self {
            AzureError::Arm(e) => Some(e),
            AzureError::Program { arm, .. } => arm.as_deref(),
            _ => None,
        }
    }

    /// The ARM error code, when this is an ARM error.
    pub fn arm_code(&self) -> Option<&str> {
        self.arm_error().map(|e| e.code.as_str())
    }

    /// The HTTP status of the ARM error, when this is one.
    pub fn arm_status(&self) -> Option<u16> {
        self.arm_error().map(|e| e.status)
    }
}

pub type Result<T, E = AzureError> = std::result::Result<T, E>;
