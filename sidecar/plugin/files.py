"""Where the plugin interface lives: the WIT world, the SDKs and the templates."""

from __future__ import annotations

from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
WIT_FILE = PLUGINS_DIR / "wit" / "hyperfilter.wit"
SDK_DIR = PLUGINS_DIR / "sdk"
TEMPLATES_DIR = PLUGINS_DIR / "templates"
