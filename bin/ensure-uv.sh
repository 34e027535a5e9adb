# Sourced by run.sh, test.sh and .ci/run: puts uv on PATH, installing it if it is missing.
# Order: uv already on PATH or in ~/.local/bin; pip (--user, then as an "externally managed"
# override); finally the wheel straight from PyPI (bin/install_uv.py: needs only python3).
ensure_uv() {
  export PATH="$HOME/.local/bin:$PATH"
  if command -v uv >/dev/null 2>&1; then return 0; fi
  local python
  python="$(command -v python3 || command -v python || true)"
  if [ -z "$python" ]; then
    echo "error: uv is missing and there is no python3 to install it with" >&2
    return 1
  fi
  echo "installing uv (the Python package manager) from PyPI..." >&2
  "$python" -m pip install --user --quiet uv >/dev/null 2>&1 \
    || "$python" -m pip install --user --quiet --break-system-packages uv >/dev/null 2>&1 \
    || "$python" "$(dirname "${BASH_SOURCE[0]}")/install_uv.py" "$HOME/.local/bin" >/dev/null \
    || { echo "error: could not install uv; see https://docs.astral.sh/uv/" >&2; return 1; }
  hash -r
  command -v uv >/dev/null 2>&1 || { echo "error: uv installed but not on PATH" >&2; return 1; }
}
