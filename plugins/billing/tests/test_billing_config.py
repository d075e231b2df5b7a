"""The plan file: what it accepts, what it refuses (naming the entry), and prices by device class."""

from __future__ import annotations

import tomllib

import billing_helpers as h
import pytest

from comfy_kernel_billing.config import DEFAULT_PLANS, ConfigError, Settings, apply_plan_file
from comfy_kernel_billing.limits import check


def load(data: dict) -> Settings:
    s = Settings()
    apply_plan_file(s, data)
    return s


def test_the_test_plans_and_the_built_in_default_load():
    with open(h.PLANS, "rb") as f:
        s = load(tomllib.load(f))
    assert s.default_plan == "basic" and set(s.plans) == {"basic", "pro"}
    basic = s.plans["basic"]
    assert basic.credits_micros == 1000 and basic.max_concurrent == 1 and basic.max_pixels == 65536
    default = load(tomllib.loads(DEFAULT_PLANS))
    assert default.default_plan == "free" and default.plans["free"].credits_micros == 5_000_000


def test_prices_by_device_name_then_type_then_default():
    s = load({"plans": {"p": {"price_per_second": {"NVIDIA H200": 0.004, "cuda": 0.002, "cpu": 0.0001}}}})
    plan = s.plans["p"]
    assert plan.price_per_second({"type": "cuda", "name": "NVIDIA H200"}) == 0.004
    assert plan.price_per_second({"type": "cuda", "name": "NVIDIA L4"}) == 0.002
    assert plan.price_per_second({"type": "mps", "name": "Apple"}) == 0.0
    assert plan.price_per_second(None) == 0.0001  # unknown worker: the lowest price
    assert plan.cost_micros(2.5, {"type": "cuda", "name": "x"}) == 5000


@pytest.mark.parametrize("data, message", [
    ({}, "at least one"),
    ({"plans": {"a": {"tier": "GOLD"}}}, "plans.a.tier"),
    ({"plans": {"a": {"monthly_credits": -1}}}, "plans.a.monthly_credits"),
    ({"plans": {"a": {"max_queue": 0}}}, "plans.a.max_queue"),
    ({"plans": {"a": {"colour": "red"}}}, "unknown keys colour"),
    ({"plans": {"a": {"price_per_second": {"cuda": "cheap"}}}}, "price_per_second"),
    ({"plans": {"a": {}}, "default_plan": "b"}, "default_plan 'b'"),
    ({"plans": {"a": {}}, "currency": "u$d"}, "currency"),
    ({"plans": {"a": {}}, "min_topup_cents": 0}, "min_topup_cents"),
])
def test_bad_plan_files_name_the_entry(data, message):
    with pytest.raises(ConfigError, match=message):
        load(data)


def test_size_and_batch_limits_point_at_the_node():
    plan = load({"plans": {"p": {"max_pixels": 512 * 512, "max_batch": 4}}}).plans["p"]
    prompt = {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 8}},
              "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 4}},
              "7": {"class_type": "Linked", "inputs": {"width": ["5", 0], "height": 4096}}}
    errors = check(prompt, plan)
    assert list(errors) == ["5"]
    assert [e["extra_info"]["input_name"] for e in errors["5"]["errors"]] == ["width", "batch_size"]
    assert errors["5"]["class_type"] == "EmptyLatentImage"
