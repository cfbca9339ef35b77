# Shared build rules for the C interop peers. A peer's Makefile sets
#   PEER    (its name: output goes to interop/.build/$(PEER)/atls-peer-$(PEER))
#   ENGINE  (its engine source)
#   TLS_PKG (pkg-config module(s)) and/or TLS_LIBS (extra -l flags)
# and includes this file. `make SAN=1` builds with ASan+UBSan.
COMMON   := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
ROOT     := $(abspath $(COMMON)/../../..)
OUT      := $(ROOT)/interop/.build/$(PEER)
BIN      := $(OUT)/atls-peer-$(PEER)
CC       ?= cc
CFLAGS   ?= -O2
CFLAGS   += -std=c11 -Wall -Wextra -Wshadow -Wformat=2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong -I$(COMMON)
ifeq ($(SAN),1)
CFLAGS   += -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
LDFLAGS  += -fsanitize=address,undefined
endif
PKGS     := libcurl libmicrohttpd $(TLS_PKG)
CFLAGS   += $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) $(TLS_LIBS) -lpthread

all: $(BIN)

$(BIN): $(COMMON)/atls_peer.c $(COMMON)/atls_peer.h $(ENGINE) $(MAKEFILE_LIST)
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS) -o $@ $(COMMON)/atls_peer.c $(ENGINE) $(LDFLAGS) $(LDLIBS)

clean:
	rm -f $(BIN)

.PHONY: all clean
