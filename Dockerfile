# Accord's container image: one image for every `accord ... serve` process (API, registry, governance, console,
# gate workers, sinks), used by deploy/k8s and deploy/compose. Multi-stage: the build tools stay in the build
# stages; the runtime stage holds the virtualenv, the catalog, schemas and policies, and runs as a non-root user.
# Base images are pinned to an exact release (replace the tags by their digests, `name:tag@sha256:...`, where the
# build can resolve them).
#
#   docker build -t accord:0.1.0 .
#   docker run --rm accord:0.1.0 --help

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG NODE_IMAGE=node:22.12.0-bookworm-slim

# -- the Python virtualenv, dependencies pinned by constraints.txt -------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/accord
COPY pyproject.toml constraints.txt ./
COPY broker ./broker
COPY connectors ./connectors
RUN /opt/accord/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

# -- the console's front-end packages (GOV.UK Frontend), as `accord local fetch` gets them -------------------------
FROM ${NODE_IMAGE} AS console-assets
WORKDIR /opt/console
RUN npm install --no-audit --no-fund --omit=dev govuk-frontend@6.6.0 axe-core@4.14.1

# -- runtime ------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 accord \
 && useradd --system --uid 10001 --gid accord --home-dir /var/lib/accord --shell /usr/sbin/nologin accord \
 && mkdir -p /var/lib/accord/secrets \
 && chown -R accord:accord /var/lib/accord \
 && chmod 0700 /var/lib/accord/secrets
COPY --from=build /opt/accord /opt/accord
COPY --from=console-assets /opt/console/node_modules /opt/console/node_modules
COPY catalog /app/catalog
COPY schemas /app/schemas
COPY policies /app/policies
ENV PATH=/opt/accord/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ACCORD_HOME=/var/lib/accord \
    ACCORD_STATE_DIR=/var/lib/accord \
    ACCORD_CATALOG_DIR=/app/catalog \
    ACCORD_SCHEMAS_DIR=/app/schemas \
    ACCORD_POLICIES_DIR=/app/policies \
    ACCORD_CONSOLE_ASSETS=/opt/console/node_modules
WORKDIR /var/lib/accord
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT ["accord"]
CMD ["--help"]
