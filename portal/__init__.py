"""Application factory: config → extensions → blueprints → errors → cli."""
from __future__ import annotations

import logging
import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal.config import load_config
from portal.extensions import babel, csrf, db, login_manager


def create_app(overrides: dict | None = None) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("PORTAL_INSTANCE_PATH") or None)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_config(app.instance_path, overrides))

    from portal.web import common, language
    from portal.web.hooks import bp as hooks_bp
    from portal.web.patient import bp as patient_bp
    from portal.web.staff import bp as staff_bp

    if app.config["PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXIES"], x_proto=app.config["PROXIES"])
    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=common.select_locale)
    common.init_app(app)

    app.register_blueprint(language.bp)
    app.register_blueprint(patient_bp)
    app.register_blueprint(staff_bp)
    app.register_blueprint(hooks_bp)
    if app.config["PORTAL_ENV"] == "development":
        from portal.web.dev import bp as dev_bp

        app.register_blueprint(dev_bp)

    from portal.cli import register_cli

    register_cli(app)
    common.redact_tokens_in_access_logs(logging.getLogger("werkzeug"), logging.getLogger("gunicorn.access"))
    return app
