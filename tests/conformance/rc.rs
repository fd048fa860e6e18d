//! The real service on 127.0.0.1, set up by `../shared/realcoord`: the upstream coordinator and its
//! stand-in miner (`start.sh`), the stand-in chain and wallet (`stub_chain.py`, `stub_wallet.py`), and
//! the upstream wallet daemon (`apps/wallet`, README item 10). Every process runs detached with its PID
//! in `$RC/<name>.pid`, so that `stop.sh` (and `.ci/run`'s trap) can stop it even when this process
//! is killed; [`cleanup`] stops exactly those PIDs.
//!
//! Also the suite's ground truth: the coordinator's own views of jobs and payments, its log (429s),
//! and the stand-in chain's log (who was made to pay, what was refunded).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The stand-in chain's port (start.sh points the coordinator's `BLOCKCHAIN_RPC_URL` there).
pub const CHAIN_PORT: u16 = 8202;
/// The wallet port: the stand-in wallet, or the real wallet daemon in its place.
pub const WALLET_PORT: u16 = 8109;
/// What the stand-in chain answers for every account: 36000 compute-seconds, i.e. 10 AIT — the
/// wallet of the issue that was shown as "36000 AITBC".
pub const CHAIN_BALANCE: u64 = 36000;
/// The wallet the real wallet daemon holds, and its address (an EIP-55 example address).
pub const DAEMON_WALLET: &str = "trading-wallet";
/// The address the real wallet daemon answers for [`DAEMON_WALLET`].
pub const DAEMON_ADDRESS: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// The wallet daemon's admin key (a local test daemon; nothing else accepts it).
const DAEMON_ADMIN_KEY: &str = "conformance-admin-key-0123456789";

/// Where everything is.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `../shared/realcoord`.
    pub realcoord: PathBuf,
    /// `$RC`: venvs, logs, PID files, databases.
    pub rc: PathBuf,
    /// The coordinator's port (`RC_PORT`, default 8203).
    pub port: u16,
}

impl Paths {
    /// The coordinator's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// The wallet's base URL (stand-in or daemon).
    pub fn wallet_url(&self) -> String {
        format!("http://127.0.0.1:{WALLET_PORT}")
    }
    fn python(&self) -> PathBuf {
        self.rc.join("venv/bin/python")
    }
    fn script(&self, name: &str) -> PathBuf {
        self.realcoord.join(name)
    }
}

/// Stops every process of the suite: the wallet daemon, then whatever `stop.sh all` knows
/// (coordinator, miner, stand-in chain and wallet). Used on the way out, on a signal, and before a
/// start (leftovers of a killed suite run in the same `$RC`).
pub fn cleanup(p: &Paths) {
    stop_pidfile(&p.rc.join("wallet_daemon.pid"));
    let _ = Command::new(p.script("stop.sh"))
        .arg("all")
        .env("RC", &p.rc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True when a live process holds one of the suite's PID files.
pub fn leftovers(p: &Paths) -> Vec<String> {
    [
        "coordinator",
        "miner",
        "stub_chain",
        "stub_wallet",
        "wallet_daemon",
    ]
    .iter()
    .filter(|n| pid_of(&p.rc.join(format!("{n}.pid"))).is_some_and(alive))
    .map(|n| n.to_string())
    .collect()
}

/// The ports the suite needs, those already taken.
pub fn busy_ports(p: &Paths) -> Vec<u16> {
    [p.port, CHAIN_PORT, WALLET_PORT]
        .into_iter()
        .filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
        .collect()
}

fn pid_of(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// SIGTERM, then SIGKILL after 10 s, of the PID in `file`; removes the file.
fn stop_pidfile(file: &Path) {
    if let Some(pid) = pid_of(file) {
        if alive(pid) {
            // SAFETY: signals to a PID this suite wrote down.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_file(file);
    }
}

/// Starts `cmd` detached (as start.sh does: `nohup … &`), output appended to `log`, its PID in
/// `pidfile`. Detached, it is not this process's child: no zombie keeps its PID alive after a kill.
fn spawn_detached(
    cmd: &[&std::ffi::OsStr],
    log: &Path,
    pidfile: &Path,
    cwd: &Path,
    envs: &[(&str, String)],
) -> Result<(), String> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("nohup \"$@\" >> \"$CF_LOG\" 2>&1 < /dev/null & echo $! > \"$CF_PIDFILE\"")
        .arg("sh")
        .args(cmd)
        .env("CF_LOG", log)
        .env("CF_PIDFILE", pidfile)
        .current_dir(cwd);
    for (k, v) in envs {
        sh.env(k, v);
    }
    let st = sh
        .status()
        .map_err(|e| format!("cannot run sh to start {:?}: {e}", cmd[0]))?;
    if !st.success() {
        return Err(format!("sh could not start {:?}: {st}", cmd[0]));
    }
    Ok(())
}

/// The last `n` lines of a log, for messages.
pub fn tail(file: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "last lines of {}:\n{}",
        file.display(),
        lines[from..].join("\n")
    )
}

/// Blocking JSON over HTTP, for the suite's own reads of the services.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    /// A client with a 30 s timeout (a server with no chain behind it blocks up to ~14 s).
    pub fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            // No idle connections kept: uvicorn drops them after 5 s, and a request on a dropped one
            // fails ("error sending request") — the suite's reads are minutes apart.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client"),
        }
    }

    /// GET `url` → (status, JSON body or `null`).
    pub fn get(&self, url: &str, bearer: Option<&str>) -> Result<(u16, Value), String> {
        let mut req = self.client.get(url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        self.send(url, req)
    }

    /// POST JSON to `url` with these headers → (status, JSON body or `null`).
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<(u16, Value), String> {
        let mut req = self.client.post(url).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(url, req)
    }

    fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        self.rt.block_on(async {
            let r = req.send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = r.status().as_u16();
            let text = r.text().await.map_err(|e| format!("{url}: {e}"))?;
            Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        })
    }

    /// Waits until GET `url` answers 200 (bounded).
    pub fn wait_ready(&self, url: &str, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        loop {
            if let Ok((200, _)) = self.get(url, None) {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!("{url} did not answer 200 within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The running service: paths, the client token, an HTTP client.
pub struct Service {
    /// Where everything is.
    pub paths: Paths,
    /// The client JWT start.sh minted (`$RC/token`, `sub=client-1`).
    pub token: String,
    /// The JWT secret (`$RC/secrets.env`), to mint tokens with other lifetimes.
    pub jwt_secret: String,
    /// For the suite's own reads.
    pub http: Http,
}

/// A position in the service's logs: what was written after it belongs to what came after.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    coordinator: u64,
    chain: u64,
}

impl Service {
    /// `start.sh` with a fresh database and the real limits, then the stand-in chain and wallet.
    pub fn start(paths: Paths) -> Result<Service, String> {
        let mut cmd = Command::new(paths.script("start.sh"));
        cmd.env("RC", &paths.rc)
            .env("RC_PORT", paths.port.to_string())
            .env("RC_FRESH", "1")
            .env("RC_STUB_CHAIN", "0")
            .env("RC_STUB_WALLET", "0")
            .env_remove("RC_RATE_LIMITS")
            .env_remove("RC_NO_MINER")
            .env_remove("RC_BOND");
        let out = crate::flow::run_limited(&mut cmd, None, Duration::from_secs(180));
        if out.code != 0 {
            return Err(format!(
                "start.sh failed:\n{}\n{}",
                out.show(),
                tail(&paths.rc.join("coordinator.log"), 30)
            ));
        }
        let token = std::fs::read_to_string(paths.rc.join("token"))
            .map_err(|e| format!("start.sh wrote no token: {e}"))?
            .trim()
            .to_string();
        let secrets = std::fs::read_to_string(paths.rc.join("secrets.env")).unwrap_or_default();
        let jwt_secret = secrets
            .lines()
            .find_map(|l| l.strip_prefix("JWT_SECRET="))
            .unwrap_or_default()
            .to_string();
        let s = Service {
            paths,
            token,
            jwt_secret,
            http: Http::new(),
        };
        s.chain_up()?;
        s.stub_wallet_up()?;
        Ok(s)
    }

    /// The stand-in chain on 8202, every account holding [`CHAIN_BALANCE`] compute-seconds.
    pub fn chain_up(&self) -> Result<(), String> {
        let p = &self.paths;
        spawn_detached(
            &[
                p.python().as_os_str(),
                "-u".as_ref(),
                p.script("stub_chain.py").as_os_str(),
                "--port".as_ref(),
                CHAIN_PORT.to_string().as_ref(),
                "--account-balance".as_ref(),
                CHAIN_BALANCE.to_string().as_ref(),
            ],
            &p.rc.join("stub_chain.log"),
            &p.rc.join("stub_chain.pid"),
            &p.rc,
            &[],
        )?;
        self.http
            .wait_ready(
                &format!("http://127.0.0.1:{CHAIN_PORT}/rpc/account/0x0"),
                Duration::from_secs(30),
            )
            .map_err(|e| {
                format!(
                    "the stand-in chain: {e}\n{}",
                    tail(&p.rc.join("stub_chain.log"), 10)
                )
            })
    }

    /// Stops the stand-in chain: paid submits then block ~7 s, refunds fail after ~14 s.
    pub fn chain_down(&self) {
        stop_pidfile(&self.paths.rc.join("stub_chain.pid"));
    }

    /// The stand-in wallet on 8109: 100000 AIT for every wallet, `poor` 1.5 (as start.sh starts it).
    pub fn stub_wallet_up(&self) -> Result<(), String> {
        let p = &self.paths;
        spawn_detached(
            &[
                p.python().as_os_str(),
                "-u".as_ref(),
                p.script("stub_wallet.py").as_os_str(),
                "--port".as_ref(),
                WALLET_PORT.to_string().as_ref(),
                "--wallet".as_ref(),
                "poor=1.5".as_ref(),
            ],
            &p.rc.join("stub_wallet.log"),
            &p.rc.join("stub_wallet.pid"),
            &p.rc,
            &[],
        )?;
        self.http
            .wait_ready(
                &format!("{}/v1/wallets/w/balance", p.wallet_url()),
                Duration::from_secs(30),
            )
            .map_err(|e| format!("the stand-in wallet: {e}"))
    }

    /// Stops the stand-in wallet.
    pub fn stub_wallet_down(&self) {
        stop_pidfile(&self.paths.rc.join("stub_wallet.pid"));
    }

    /// The upstream wallet daemon on 8109 with a fresh keystore holding [`DAEMON_WALLET`] at
    /// [`DAEMON_ADDRESS`]; it reads balances from the stand-in chain.
    pub fn wallet_daemon_up(&self) -> Result<(), String> {
        let p = &self.paths;
        let data = p.rc.join("home/data");
        let wdir = p.rc.join("wallet");
        std::fs::create_dir_all(data.join("data")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(wdir.join("empty")).map_err(|e| e.to_string())?;
        for f in ["keystore.db", "wallet_ledger.db"] {
            let _ = std::fs::remove_file(data.join("data").join(f));
        }
        let src = p.rc.join("src");
        let pythonpath = [
            "",
            "apps/coordinator-api/src",
            "packages/py/aitbc-sdk/src",
            "packages/py/aitbc-crypto/src",
            "packages/py/aitbc-agent-core/src",
            "apps/wallet/src",
        ]
        .iter()
        .map(|s| src.join(s).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
        // README item 10: the keystore refuses a database outside cwd, cwd/data or /var/lib/aitbc,
        // so it runs in $RC/home/data; WALLET_DIR empty and no node env file: nothing imported.
        spawn_detached(
            &[
                p.python().as_os_str(),
                "-m".as_ref(),
                "uvicorn".as_ref(),
                "wallet_app.main:app".as_ref(),
                "--host".as_ref(),
                "127.0.0.1".as_ref(),
                "--port".as_ref(),
                WALLET_PORT.to_string().as_ref(),
            ],
            &p.rc.join("wallet_daemon.log"),
            &p.rc.join("wallet_daemon.pid"),
            &data,
            &[
                ("AITBC_HOME", p.rc.join("home").display().to_string()),
                ("COORDINATOR_API_KEY", DAEMON_ADMIN_KEY.into()),
                ("WALLET_DIR", wdir.join("empty").display().to_string()),
                (
                    "AITBC_NODE_ENV_FILE",
                    wdir.join("no-node.env").display().to_string(),
                ),
                (
                    "BLOCKCHAIN_RPC_URL",
                    format!("http://127.0.0.1:{CHAIN_PORT}"),
                ),
                ("PYTHONPATH", pythonpath),
            ],
        )?;
        self.http
            .wait_ready(
                &format!("{}/v1/wallets", p.wallet_url()),
                Duration::from_secs(90),
            )
            .map_err(|e| {
                format!(
                    "the wallet daemon: {e}\n{}",
                    tail(&p.rc.join("wallet_daemon.log"), 20)
                )
            })?;
        let (status, body) = self.http.post(
            &format!("{}/v1/wallets", p.wallet_url()),
            &[("X-API-Key", DAEMON_ADMIN_KEY)],
            &json!({
                "wallet_id": DAEMON_WALLET,
                "chain_id": "stub",
                "password": "Conf0rmance!pw",
                "metadata": {"address": DAEMON_ADDRESS},
            }),
        )?;
        if status != 201 {
            return Err(format!(
                "the wallet daemon did not create {DAEMON_WALLET}: {status} {body}"
            ));
        }
        Ok(())
    }

    /// Stops the wallet daemon.
    pub fn wallet_daemon_down(&self) {
        stop_pidfile(&self.paths.rc.join("wallet_daemon.pid"));
    }

    /// Now, in the logs.
    pub fn mark(&self) -> Mark {
        let len = |f: &str| {
            std::fs::metadata(self.paths.rc.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        Mark {
            coordinator: len("coordinator.log"),
            chain: len("stub_chain.log"),
        }
    }

    fn since(&self, file: &str, from: u64) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.paths.rc.join(file)) {
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The paths the coordinator answered 429 on since `m`, for client routes (the miner's own
    /// routes have their own limits and are not the client's doing).
    pub fn client_429s_since(&self, m: Mark) -> Vec<String> {
        self.since("coordinator.log", m.coordinator)
            .lines()
            .filter(|l| l.contains("[aitbc.rate_limiting] Rate limit exceeded for"))
            .map(|l| l.rsplit(" on ").next().unwrap_or(l).trim().to_string())
            .filter(|path| !path.starts_with("/v1/miners"))
            .collect()
    }

    /// Requests the coordinator received since `m`, by method and path class (`GET /v1/jobs/{id}`…).
    pub fn requests_since(&self, m: Mark) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for l in self.since("coordinator.log", m.coordinator).lines() {
            let (Some(method), Some(path)) = (field(l, "Method: "), field(l, "Path: ")) else {
                continue;
            };
            if !l.contains("Incoming request") {
                continue;
            }
            *n.entry(format!("{method} {}", path_class(path)))
                .or_insert(0) += 1;
        }
        n
    }

    /// Who the stand-in chain was asked to escrow from, per job, since `m`.
    pub fn escrow_buyers_since(&self, m: Mark) -> HashMap<String, String> {
        self.since("stub_chain.log", m.chain)
            .lines()
            .filter_map(|l| l.strip_prefix("stub_chain: escrow "))
            .filter_map(|j| serde_json::from_str::<Value>(j).ok())
            .filter_map(|v| {
                Some((
                    v["job_id"].as_str()?.to_string(),
                    v["buyer"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }

    /// GET a coordinator path as the client.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.paths.url());
        match self.http.get(&url, Some(&self.token))? {
            (200, v) => Ok(v),
            (s, v) => Err(format!("GET {url} answered {s}: {v}")),
        }
    }

    /// The coordinator's payment view of a job (`GET /v1/jobs/{id}/payment`).
    pub fn payment(&self, id: &str) -> Result<Value, String> {
        self.get(&format!("/v1/jobs/{id}/payment"))
    }

    /// Every job of the client whose `payload.client_ref` starts with `prefix`, newest first.
    pub fn jobs_with_ref(&self, prefix: &str) -> Result<Vec<Value>, String> {
        let v = self.get("/v1/jobs?limit=1000")?;
        Ok(v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| {
                j["payload"]["client_ref"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(prefix))
            })
            .collect())
    }

    /// How many jobs the client has (up to 1000).
    pub fn job_count(&self) -> Result<usize, String> {
        let v = self.get("/v1/jobs?limit=1000")?;
        Ok(v["items"].as_array().map_or(0, Vec::len))
    }

    /// What the wallet on 8109 answers for `name` (stand-in or daemon).
    pub fn wallet(&self, name: &str) -> Result<Value, String> {
        let url = format!("{}/v1/wallets/{name}/balance", self.paths.wallet_url());
        match self.http.get(&url, None)? {
            (200, v) => Ok(v),
            (s, v) => Err(format!("GET {url} answered {s}: {v}")),
        }
    }

    /// A client JWT valid for `hours`, signed with the service's secret (as start.sh mints them).
    pub fn mint_token(&self, hours: f64) -> Result<String, String> {
        let out = Command::new(self.paths.python())
            .arg(self.paths.script("mint_token.py"))
            .args(["--sub", "client-1", "--role", "client", "--hours"])
            .arg(hours.to_string())
            .env("JWT_SECRET", &self.jwt_secret)
            .output()
            .map_err(|e| format!("mint_token.py: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mint_token.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The text after `key` up to the next comma.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split(',').next().unwrap_or(rest).trim())
}

/// `/v1/jobs/<32 hex>/result` → `/v1/jobs/{id}/result`.
fn path_class(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() == 32 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
