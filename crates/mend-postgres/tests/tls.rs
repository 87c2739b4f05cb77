//! TLS to PostgreSQL: a throwaway cluster with `ssl=on` and a CA made here (openssl CLI), and
//! every `sslmode` checked against it — which connect, over TLS or not, and which are refused
//! with an error that says why. Runs its own server, so it needs `initdb` and `pg_ctl`
//! (skipped, saying so, when they are not installed), not `MEND_TEST_POSTGRES_URL`.

#![expect(clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mend::store::Store;
use mend::NewJob;
use mend_postgres::{PgConfig, PgStore};

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL's server programs are here.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/local/bin".into());
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    dirs.extend(versions.into_iter().rev());
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root (the server refuses
/// to run as root).
fn run_pg(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate it signs for `localhost` only, and a second CA that signed
/// nothing.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=mend test {ca}"),
        );
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// A running throwaway cluster; stopped (immediately) and deleted on drop, whatever the test
/// did.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    // Dropped after the server stops (fields drop after `drop` runs).
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(bin: PathBuf) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("mend-tls-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        make_certificates(root);
        let data = root.join("data");
        // The server insists on a private key nobody else can read.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                root.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
        }
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(root)
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown: {out:?}");
        }
        let out = run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // TLS in the configuration file rather than on the command line, so that the test can
        // turn it off later (command-line settings beat ALTER SYSTEM).
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n",
            root = root.display()
        );
        {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .and_then(|mut f| f.write_all(conf.as_bytes()))
                .expect("append to postgresql.conf");
        }
        // A password user for SCRAM over TLS (channel binding); everyone else is trusted.
        let hba = data.join("pg_hba.conf");
        let trusted = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "hostssl all scram 127.0.0.1/32 scram-sha-256\nhostssl all scram ::1/128 scram-sha-256\n{trusted}"
            ),
        )
        .expect("write pg_hba.conf");
        let options = format!(
            "-c port={port} -c listen_addresses=localhost -c unix_socket_directories={root} \
             -c fsync=off -c shared_buffers=16MB -c max_connections=40",
            root = root.display()
        );
        let cluster = Cluster {
            bin,
            data,
            port,
            dir,
        };
        let out = run_pg(
            &cluster.bin,
            "pg_ctl",
            &[
                "-D",
                &cluster.data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &cluster.dir.path().join("log").to_string_lossy(),
                "-w",
                "-t",
                "20",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default()
        );
        cluster
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }

    fn ca(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// Connects as mend does and says whether the session is encrypted (the server's view).
async fn ssl_of(url: &str) -> Result<bool, String> {
    let client = mend_postgres::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_a_server_with_tls() {
    let Some(bin) = pg_bin() else {
        eprintln!(
            "skipped: every_sslmode_against_a_server_with_tls: initdb/pg_ctl not found (install the PostgreSQL server programs)"
        );
        return;
    };
    let started = Instant::now();
    let cluster = Cluster::start(bin);
    let (ca, other_ca) = (cluster.ca("ca.crt"), cluster.ca("other-ca.crt"));

    // verify-full with the name on the certificate: TLS, and a query runs.
    let full = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(ssl_of(&full).await, Ok(true), "verify-full, right host");

    // verify-full with a host the certificate does not name: refused, saying why.
    let wrong = cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let e = ssl_of(&wrong)
        .await
        .expect_err("verify-full must refuse a wrong host name");
    eprintln!("verify-full, wrong host: {e}");
    assert!(
        e.contains("not valid for name") && e.contains("127.0.0.1") && e.contains("sslrootcert"),
        "{e}"
    );

    // verify-ca checks the chain, not the name.
    let ca_only = cluster.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(ssl_of(&ca_only).await, Ok(true), "verify-ca, right CA");
    let unknown = cluster.url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
    );
    let e = ssl_of(&unknown)
        .await
        .expect_err("verify-ca must refuse an unknown CA");
    eprintln!("verify-ca, unknown CA: {e}");
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    // require with a root certificate given checks the chain too (libpq's rule).
    let e = ssl_of(&cluster.url(
        "localhost",
        &format!("sslmode=require&sslrootcert={other_ca}"),
    ))
    .await
    .expect_err("require with sslrootcert checks the chain");
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require without a root certificate: encrypted, not verified.
    assert_eq!(
        ssl_of(&cluster.url("127.0.0.1", "sslmode=require")).await,
        Ok(true),
        "require"
    );
    assert_eq!(
        ssl_of(&cluster.url("127.0.0.1", "sslmode=disable")).await,
        Ok(false),
        "disable"
    );
    assert_eq!(
        ssl_of(&cluster.url("127.0.0.1", "sslmode=prefer")).await,
        Ok(true),
        "prefer"
    );
    assert_eq!(
        ssl_of(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .await,
        Ok(true),
        "no sslmode means prefer"
    );

    // A whole store over verify-full: migrations, the pools and the session connection (its
    // LISTEN and advisory locks) are all encrypted.
    let store_url = format!("{full}&schema=tls_test&application_name=mend_tls_store");
    let store = PgStore::open_with(
        &store_url,
        PgConfig {
            pool_size: 2,
            claim_pool_size: 1,
            ..PgConfig::default()
        },
    )
    .await
    .expect("a store over verify-full");
    store
        .insert_many(vec![NewJob::new("k", serde_json::json!({"x": 1}))])
        .await
        .expect("enqueue over TLS");
    assert_eq!(
        mend_postgres::doctor::schema_version(&store_url)
            .await
            .expect("doctor over TLS"),
        mend_postgres::SCHEMA_VERSION
    );
    let admin = mend_postgres::connect(&cluster.url("localhost", "sslmode=disable"))
        .await
        .expect("plain connection");
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'mend_tls_store'",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
    // At least a pooled connection and the session connection (LISTEN, advisory locks).
    assert!(tls >= 2, "the store's connections use TLS ({tls} do)");
    assert_eq!(plain, 0, "no connection of the store is plain");
    drop(store);

    // SCRAM bound to the TLS session (channel_binding=require insists on SCRAM-SHA-256-PLUS,
    // which the server checks against the certificate it sent).
    admin
        .batch_execute("CREATE ROLE scram LOGIN PASSWORD 'Tr0ub4dor'")
        .await
        .expect("create the password user");
    for params in [
        format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
        "sslmode=require&channel_binding=require".to_owned(),
    ] {
        let url = format!(
            "postgres://scram:Tr0ub4dor@localhost:{}/postgres?{params}",
            cluster.port
        );
        assert_eq!(
            ssl_of(&url).await,
            Ok(true),
            "SCRAM with channel binding, {params}"
        );
    }
    let e = ssl_of(&format!(
        "postgres://scram:wrong@localhost:{}/postgres?sslmode=require",
        cluster.port
    ))
    .await
    .expect_err("a wrong password is refused");
    assert!(
        e.contains("password authentication failed") && !e.contains("wrong"),
        "{e}"
    );

    // A server that does not offer TLS: require is refused, prefer falls back to plain.
    for sql in ["ALTER SYSTEM SET ssl = off", "SELECT pg_reload_conf()"] {
        admin.batch_execute(sql).await.expect("turn TLS off");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        match ssl_of(&cluster.url("127.0.0.1", "sslmode=require")).await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => panic!("the server still offers TLS after ssl=off and a reload"),
        }
    };
    assert!(e.contains("server does not support TLS"), "{e}");
    assert_eq!(
        ssl_of(&cluster.url("127.0.0.1", "sslmode=prefer")).await,
        Ok(false),
        "prefer falls back to plain"
    );

    // Bad parameters are refused before connecting, naming the parameter.
    let e = ssl_of(&cluster.url("127.0.0.1", "sslmode=verify"))
        .await
        .expect_err("bad sslmode");
    assert!(e.contains("sslmode=\"verify\""), "{e}");
    let e = ssl_of(&cluster.url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
    ))
    .await
    .expect_err("missing sslrootcert file");
    assert!(e.contains("sslrootcert=/nonexistent.pem"), "{e}");
    let e = ssl_of("postgres://postgres:hunter2@127.0.0.1:1/postgres?sslmode=verify-full")
        .await
        .expect_err("verify-full without a root");
    assert!(
        e.contains("needs sslrootcert") && !e.contains("hunter2"),
        "{e}"
    );

    eprintln!("TLS checks took {:?}", started.elapsed());
}
