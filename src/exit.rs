//! Exit codes, in one place. Every command maps its outcome to one of these.

/// The command did what was asked.
pub const SUCCESS: i32 = 0;
/// A step failed (or a run could not be paid for).
pub const STEP_FAILED: i32 = 1;
/// The plan is invalid, or the command line is.
pub const INVALID: i32 = 2;
/// The coordinator could not be reached, or it refused our credentials.
pub const UNREACHABLE: i32 = 3;
/// A step or a request ran out of time.
pub const TIMEOUT: i32 = 4;
/// The run lost the plan's lock to another holder (its lease was taken over: `--store postgres://…`)
/// and stopped without writing more (docs/decisions.md).
pub const LOCK_LOST: i32 = 5;
/// The run was interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: i32 = 130;

/// The exit code for a command that stops on a coordinator error: unreachable or refused credentials
/// are 3, a request that timed out 4, anything else a failure (1). The client only classifies its
/// errors; what they mean for a process is decided here.
pub fn for_client(e: &crate::client::ClientError) -> i32 {
    use crate::client::ClientError;
    match e {
        ClientError::Unavailable { .. } | ClientError::Auth { .. } => UNREACHABLE,
        ClientError::Timeout { .. } | ClientError::OutOfTime { .. } => TIMEOUT,
        _ => STEP_FAILED,
    }
}

/// The exit code for a command that stops on a failed operation.
pub fn for_op(e: &crate::ops::OpError) -> i32 {
    use crate::ops::OpError;
    match e {
        OpError::Input(_) => INVALID,
        OpError::Rules(_) if e.is_insufficient_balance() => STEP_FAILED,
        OpError::Rules(_) => INVALID,
        OpError::BalanceUnknown { error, .. } | OpError::Client(error) => for_client(error),
        OpError::WaitTimeout { .. } => TIMEOUT,
        OpError::JobEnded { .. }
        | OpError::ResultUnavailable { .. }
        | OpError::WalletNotFound { .. }
        | OpError::PayerUnknown { .. } => STEP_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobView;
    use crate::client::ClientError;
    use crate::ops::OpError;

    fn view(state: &str) -> Box<JobView> {
        Box::new(
            serde_json::from_value(serde_json::json!({
                "job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": state, "payload": {}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn errors_map_to_the_documented_codes() {
        let down = ClientError::Unavailable {
            url: "u".into(),
            reason: "refused".into(),
            status: None,
        };
        let slow = ClientError::Timeout {
            url: "u".into(),
            after: std::time::Duration::from_secs(1),
        };
        let gone = ClientError::NotFound {
            url: "u".into(),
            detail: "job not found".into(),
        };
        assert_eq!(for_client(&down), UNREACHABLE);
        assert_eq!(for_client(&slow), TIMEOUT);
        assert_eq!(for_client(&gone), STEP_FAILED);
        let out_of_time = ClientError::OutOfTime {
            url: "u".into(),
            left: std::time::Duration::from_secs(3),
            wait: Some(std::time::Duration::from_secs(60)),
            retry_after: true,
            last: None,
        };
        assert_eq!(for_client(&out_of_time), TIMEOUT);
        assert_eq!(for_op(&OpError::from(gone)), STEP_FAILED);
        assert_eq!(for_op(&OpError::Input("x".into())), INVALID);
        let timeout = OpError::WaitTimeout {
            last: view("RUNNING"),
            after: std::time::Duration::from_secs(20),
            retry_after: None,
            stuck: None,
        };
        assert_eq!(for_op(&timeout), TIMEOUT);
        assert_eq!(
            for_op(&OpError::JobEnded {
                last: view("FAILED")
            }),
            STEP_FAILED
        );
        let poor = crate::policy::check_balance(
            "w",
            crate::money::Money::ZERO,
            crate::money::Money::from_int(1),
        )
        .unwrap_err();
        assert_eq!(for_op(&OpError::Rules(vec![poor])), STEP_FAILED);
        assert_eq!(
            for_op(&OpError::Rules(vec![
                crate::policy::PolicyError::EmptyPrompt
            ])),
            INVALID
        );
    }
}
