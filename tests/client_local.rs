//! The HTTP client against the embedded coordinator over real HTTP on 127.0.0.1: every trait method,
//! the real error answers (401/403, 402, 409, 422, 425), and the coordinator's fault flags.

use std::time::Duration;

use aitbc_flow::api::JobCreate;
use aitbc_flow::api::{AllocateRequest, JobState, ListQuery, TaskRequirements, verify_receipt};
use aitbc_flow::client::config::ClientConfig;
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::client::{ClientError, Coordinator};
use aitbc_flow::local::{Faults, LocalConfig, LocalHandle, start};
use aitbc_flow::model::JobRequest;
use aitbc_flow::money::Money;

async fn local(config: LocalConfig) -> (LocalHandle, HttpCoordinator) {
    let h = start(config).await.unwrap();
    let c = HttpCoordinator::new(
        &ClientConfig::for_url(&h.url())
            .unwrap()
            .with_token(h.token()),
    )
    .unwrap();
    (h, c)
}

/// The body the operation layer sends for an inference job of `wallet`, with its client reference.
fn job_create(wallet: &str, payment: i64, client_ref: &str) -> JobCreate {
    let req = JobRequest {
        job_type: "inference".into(),
        prompt: "Say hello".into(),
        payment: Money::from_int(payment),
        wallet: wallet.into(),
        model: Some("llama2".into()),
        ..JobRequest::default()
    };
    aitbc_flow::ops::submit::body(&req, client_ref)
}

async fn until_final(c: &HttpCoordinator, id: &aitbc_flow::api::JobId) -> JobState {
    for _ in 0..100 {
        let v = c.job(id).await.unwrap();
        if v.state.is_final() {
            return v.state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never finished");
}

#[tokio::test]
async fn every_method_against_the_embedded_coordinator() {
    let (h, c) = local(LocalConfig::for_tests()).await;
    let job = job_create("w1", 2, "t/1");
    let (v, created) = c.submit(&job, Some("key-1")).await.unwrap();
    assert!(created);
    assert_eq!(v.payment_status.as_deref(), Some("escrowed"));
    let (again, created) = c.submit(&job, Some("key-1")).await.unwrap();
    assert!(!created, "the same Idempotency-Key finds the same job");
    assert_eq!(again.job_id, v.job_id);

    assert_eq!(until_final(&c, &v.job_id).await, JobState::Completed);
    let r = c.result(&v.job_id).await.unwrap();
    let receipt = r.receipt.expect("a receipt");
    assert_eq!(verify_receipt(&receipt), Ok(()));
    assert_eq!(c.receipt(&v.job_id).await.unwrap(), receipt);
    assert_eq!(c.payment(&v.job_id).await.unwrap().status, "released");

    let list = c
        .list(&ListQuery {
            limit: Some(10),
            job_type: Some("inference".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].client_ref(), Some("t/1"));

    let e = c.cancel(&v.job_id).await.unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e:?}");

    let b = c.balance("w1").await.unwrap();
    assert_eq!(b.balance, Money::from_int(10_000 - 2));

    let alloc = c
        .allocate(&AllocateRequest {
            agent_id: "agent-7".into(),
            task_requirements: TaskRequirements {
                cpu_cores: 4.0,
                memory_gb: 16.0,
                gpu_count: 1.0,
                task_type: "inference".into(),
                ..TaskRequirements::default()
            },
            optimization_target: "efficiency".into(),
            priority_level: "normal".into(),
        })
        .await
        .unwrap();
    assert_eq!(alloc.agent_id, "agent-7");
    assert!(!c.gpu_offers(Some(10)).await.unwrap().is_empty());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn real_error_answers_are_classified() {
    let (h, c) = local(LocalConfig {
        faucet: false,
        fund: vec![("poor".into(), Money::from_int(1))],
        ..LocalConfig::for_tests()
    })
    .await;

    // 402 from the server itself (the trait does not preflight the balance).
    let e = c
        .submit(&job_create("poor", 2, "t/2"), None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ClientError::InsufficientBalance {
            wallet: "poor".into(),
            needed: Money::from_int(2),
            held: Money::from_int(1),
        }
    );

    // 425 until a result exists; 404 for an unknown job.
    let unknown = "00000000000000000000000000000000".parse().unwrap();
    assert!(matches!(
        c.job(&unknown).await.unwrap_err(),
        ClientError::NotFound { .. }
    ));
    assert!(matches!(
        c.result(&unknown).await.unwrap_err(),
        ClientError::NotFound { .. } | ClientError::NotReady { .. }
    ));

    // 422 with field details.
    let mut req = AllocateRequest {
        agent_id: "a".into(),
        task_requirements: TaskRequirements::default(),
        optimization_target: "fastest".into(),
        priority_level: "normal".into(),
    };
    req.task_requirements.task_type = "inference".into();
    match c.allocate(&req).await.unwrap_err() {
        ClientError::Invalid {
            status, details, ..
        } => {
            assert_eq!(status, 422);
            assert!(!details.is_empty());
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    // 401 without a token, 403 with a wrong one.
    let anon = HttpCoordinator::new(&ClientConfig::for_url(&h.url()).unwrap()).unwrap();
    assert!(matches!(
        anon.job(&unknown).await.unwrap_err(),
        ClientError::Auth { status: 401, .. }
    ));
    let wrong =
        HttpCoordinator::new(&ClientConfig::for_url(&h.url()).unwrap().with_token("nope")).unwrap();
    let e = wrong.job(&unknown).await.unwrap_err();
    assert!(matches!(e, ClientError::Auth { .. }), "{e:?}");
    assert_eq!(
        aitbc_flow::exit::for_client(&e),
        aitbc_flow::exit::UNREACHABLE
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn fault_flags_map_to_retryable_errors() {
    let faults = |f: Faults| LocalConfig {
        faults: Faults { seed: Some(1), ..f },
        ..LocalConfig::for_tests()
    };
    let id = "00000000000000000000000000000000".parse().unwrap();

    let (h, c) = local(faults(Faults {
        rate_503: 1.0,
        ..Faults::default()
    }))
    .await;
    let e = c.job(&id).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    h.shutdown().await.unwrap();

    let (h, c) = local(faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    }))
    .await;
    let e = c.job(&id).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    h.shutdown().await.unwrap();

    // A dropped answer after commit: the client sees a transport failure that may have committed (so the
    // executor looks the job up before it submits again).
    let (h, c) = local(faults(Faults {
        drop_rate: 1.0,
        path_prefix: Some("/v1/jobs".into()),
        ..Faults::default()
    }))
    .await;
    let e = c
        .submit(&job_create("w", 1, "run/lost"), None)
        .await
        .unwrap_err();
    assert!(e.may_have_committed(), "{e:?}");
    h.shutdown().await.unwrap();
}
