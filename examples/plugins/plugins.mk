# Example plugins, for inclusion by the top-level Makefile:
#   include examples/plugins/plugins.mk
# PLUGINS lists their names; `make plugins` builds them into bin/plugins
# (skipping those already up to date) with the same code the tests use.

PLUGINS := $(sort $(notdir $(patsubst %/main.go,%,$(wildcard examples/plugins/*/main.go))))
PLUGIN_WASM := $(addprefix bin/plugins/,$(addsuffix .wasm,$(PLUGINS)))

.PHONY: plugins
plugins:
	go run ./internal/testplugins/cmd/plugins build $(PLUGINS)
