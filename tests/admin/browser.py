"""Headless Chromium for the end-to-end tests: Debian's chromium driven by Selenium.

Nothing here downloads a browser: Selenium is pointed at ``/usr/bin/chromedriver`` (from
Debian's ``chromium-driver``). Without Chromium the tests skip, except in CI (``CI`` set),
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img" / "admin"
WINDOW = (1280, 900)


def require_browser() -> None:
    """Skip when there is no Chromium (fail instead in CI, where it must be installed)."""
    missing = [path for path in (CHROMEDRIVER,) if not Path(path).exists()]
    if not shutil.which("chromium"):
        missing.append("chromium")
    if not missing:
        return
    reason = (
        f"{', '.join(missing)} not installed; install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver) to run the browser tests"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium, quit at teardown."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save the page as ``tests/artifacts/screenshots/<name>.png`` (the test's artifact).

    With ``PQ_UPDATE_DOC_SCREENSHOTS=1`` it is copied to ``docs/img/admin/`` as well, for the
    admin guide.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # The whole page, not just the window: grow the window to the document's height.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WINDOW[0], min(max(int(height), WINDOW[1]), 2400))
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    driver.set_window_size(*WINDOW)
    if os.environ.get("PQ_UPDATE_DOC_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / path.name)
    return path


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    """Wait until ``condition(driver)`` is truthy (Selenium polls; no fixed sleeps)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A STATIC_ROOT holding the admin's and django-pq's static files.

    The test settings do not install ``django.contrib.staticfiles``, so the live server
    serves static files from STATIC_ROOT only; without it the screenshots would show
    unstyled pages.
    """
    import django.contrib.admin
    from django.test import override_settings

    import django_pq

    root = tmp_path_factory.mktemp("static")
    for package in (django.contrib.admin, django_pq):
        source = Path(package.__file__).resolve().parent / "static"
        shutil.copytree(source, root, dirs_exist_ok=True)
    with override_settings(STATIC_ROOT=str(root)):
        yield root


def submit_and_read_message(driver: Any, button: Any) -> str:
    """Press ``button`` and return the first message of the page it leads to.

    Waits for the old page to go away first: it may show the no-worker banner, which is
    styled as a message list too, and reading that would race with the navigation.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    old_page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    wait_for(driver, expected_conditions.staleness_of(old_page))
    selector = ".messagelist:not(.pq-no-worker) li"
    return str(wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector))[0].text)
