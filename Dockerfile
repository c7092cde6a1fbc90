# The manager image: one static binary (`manager controller`, `manager host`, `manager call`) on distroless,
# running as the non-root user 65532. Build it with `make docker-build` (IMG=registry/repo:tag).
#
# The build step is the same `go build` as `make build`, with cgo off so that the binary is static.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
# wazero with the inline termination check (hack/wazero), the target of a replace line in go.mod.
COPY third_party/ third_party/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY pool/ pool/
COPY runtime/ runtime/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/manager ./cmd/manager

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/manager /manager
# The chart's pod security context also sets this user, and fsGroup 65532 for the cache volume.
USER 65532:65532
ENTRYPOINT ["/manager"]
