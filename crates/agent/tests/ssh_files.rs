//! `scp` and `sftp` against the agent's SFTP subsystem.
#![allow(clippy::unwrap_used)]

use rand::RngCore;
use tether_testing::checksum::sha256_file;
use tether_testing::openssh::{run, setup, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_10mb_both_ways() {
    let env = setup().await;
    let src = env.path("src.bin");
    let mut data = vec![0u8; 10 * 1024 * 1024];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&src, &data).unwrap();
    let remote = env.path("remote.bin");
    let back = env.path("back.bin");

    let up = run(
        env.scp(&[
            src.to_str().unwrap(),
            &format!("127.0.0.1:{}", remote.display()),
        ]),
        None,
    )
    .await;
    assert!(up.status.success(), "upload: {}", stderr(&up));
    assert_eq!(sha256_file(&remote), sha256_file(&src));

    let down = run(
        env.scp(&[
            &format!("127.0.0.1:{}", remote.display()),
            back.to_str().unwrap(),
        ]),
        None,
    )
    .await;
    assert!(down.status.success(), "download: {}", stderr(&down));
    assert_eq!(sha256_file(&back), sha256_file(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_batch() {
    let env = setup().await;
    let local = env.path("local.txt");
    std::fs::write(&local, b"sftp payload\n").unwrap();
    let remote_dir = env.path("rdir");
    let fetched = env.path("fetched.txt");
    let batch = env.path("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {d}\nput {l} {d}/f.txt\nls {d}\nget {d}/f.txt {g}\nrename {d}/f.txt {d}/g.txt\nls -l {d}\nrm {d}/g.txt\nrmdir {d}\n",
            d = remote_dir.display(),
            l = local.display(),
            g = fetched.display()
        ),
    )
    .unwrap();
    let out = run(env.sftp(&batch), None).await;
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("f.txt"), "{text}");
    assert!(text.contains("g.txt"), "{text}");
    assert_eq!(std::fs::read(&fetched).unwrap(), b"sftp payload\n");
    assert!(!remote_dir.exists(), "rmdir did not remove the directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_reports_missing_file() {
    let env = setup().await;
    let batch = env.path("batch");
    std::fs::write(
        &batch,
        format!(
            "get {}/nope {}\n",
            env.dir.path().display(),
            env.path("x").display()
        ),
    )
    .unwrap();
    let out = run(env.sftp(&batch), None).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nope\" not found"),
        "{}",
        stderr(&out)
    );
}
