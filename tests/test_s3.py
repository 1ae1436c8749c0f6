"""The same job on s3:// through s3fs, against a real S3 API server (moto) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import socket

import pytest
import yaml

from conftest import render_here, start_cli, status_here, stop_when

BUCKET = "renders"


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def bucket_frames(env: dict, prefix: str) -> dict[str, str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith(".png") and "/segments/" in key:  # frames, not contact sheets
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                out[key.split("/segments/", 1)[1]] = hashlib.sha256(body).hexdigest()
    return out


def vouched_frames(env: dict, prefix: str) -> int:
    """Frames the store vouches for, from one listing (no downloads: it is polled)."""
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sum(1 for page in pages for item in page.get("Contents", []) if "/frames/" in item["Key"] and item["Key"].endswith(".png.ok"))


def test_render_kill_resume_and_status_on_s3(tmp_path, s3, ray_cluster, monkeypatch, capsys):
    job = {"name": "s3job", "model": "tiny", "width": 64, "height": 64, "seed": 5, "noise_mode": "slerp",
           "motion": {"zoom": "0:(1.01)"}, "num_frames": 32, "prompts": {0: "a red fox"},
           "cluster": {"checkpoint_every": 4, "cpu_threads": 1}}  # one thread: the reference renders here
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))

    assert render_here(None, str(path), f"output.uri={tmp_path / 'local'}")[0] == 0
    reference = {str(p.relative_to(p.parents[3])): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (tmp_path / "local").glob("*/segments/*/*/frames/*.png")}

    uri = f"s3://{BUCKET}/nightly"
    process = start_cli("render", str(path), f"output.uri={uri}", "--no-progress", env=s3)
    stop_when(process, lambda: vouched_frames(s3, "nightly/") >= 12)
    for key, value in s3.items():  # status and the resume run here, reading the bucket as the CLI would
        monkeypatch.setenv(key, value)
    assert "incomplete" in status_here(capsys, uri)[1]

    code, stdout, err = render_here(capsys, str(path), f"output.uri={uri}")  # resumed on the session's Ray
    assert code == 0, err
    video = stdout.strip().splitlines()[-1]
    assert video.startswith(f"{uri}/s3job-") and video.endswith("/s3job.mp4")
    assert bucket_frames(s3, "nightly/") == reference

    code, status = status_here(capsys, uri)
    assert code == 0
    assert "s3job" in status and "32/32" in status and "frames complete" in status
    assert video in status
    sheet = video.replace("/s3job.mp4", "/s3job-s3job-sheet.png")
    assert f"contact sheet s3job: {sheet}" in status
    # the final stage streamed the frames from S3 into ffmpeg: the video decodes to every frame
    import boto3
    import imageio_ffmpeg

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    local_video = tmp_path / "s3job.mp4"
    client.download_file(BUCKET, video[len(f"s3://{BUCKET}/"):], str(local_video))
    reader = imageio_ffmpeg.read_frames(str(local_video))
    next(reader)
    assert sum(1 for _ in reader) == 32
    # the job's page is in the bucket beside the video, linking to it by its relative name
    folder = video[len(f"s3://{BUCKET}/"):].rsplit("/", 1)[0]
    page = client.get_object(Bucket=BUCKET, Key=f"{folder}/report.html")["Body"].read().decode()
    assert 'src="s3job.mp4"' in page and "32 frames" in page
    client.head_object(Bucket=BUCKET, Key=f"{folder}/report/frames-per-second.svg")


def test_storage_options_in_the_spec_reach_s3(tmp_path, s3, ray_cluster, monkeypatch, capsys):
    """Only the spec names the endpoint: the driver, the workers (their credentials forwarded from
    this process) and the final stage all reach it. In-process, on the session's Ray."""
    from deforum_ray.cli import main

    job = {"name": "opts", "model": "tiny", "width": 32, "height": 32, "num_frames": 3, "prompts": {0: "x"},
           "output": {"uri": f"s3://{BUCKET}/opts", "storage_options": {"endpoint_url": s3["AWS_ENDPOINT_URL"]}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    code = main(["render", str(path), "cluster.num_workers=1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert len(bucket_frames(s3, "opts/")) == 3
