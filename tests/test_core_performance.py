"""The card's headline AUC and the 'not better than chance' rule shared by the CLI, the PDF and the window."""

from __future__ import annotations

import pytest

from asdesk.core.performance import chance_warning, measured_auc


def card(auc: object) -> dict:
    return {"performance": {"dataset": "TEST", "metrics": {"auc": auc}}}


def test_value_and_interval_are_read():
    auc = measured_auc(card({"value": 0.822, "ci95": [0.788, 0.8532]}))
    assert (auc.value, auc.low, auc.high) == (0.822, 0.788, 0.8532)
    assert auc.text() == "0.822 (95% CI 0.788-0.853)" and not auc.reaches_chance
    assert chance_warning(card({"value": 0.822, "ci95": [0.788, 0.8532]})) == ""


@pytest.mark.parametrize("low", [0.5, 0.4922, 0.2])
def test_an_interval_reaching_one_half_warns(low):
    document = card({"value": 0.62, "ci95": [low, 0.78]})
    assert measured_auc(document).reaches_chance
    assert f"{low:.3f}" in chance_warning(document) and "Do not rely" in chance_warning(document)


@pytest.mark.parametrize("document", [{}, {"performance": {"note": "no test data"}}, card("high"),
                                      card({"value": None}), card({"value": 0.7, "ci95": "n/a"})])
def test_cards_without_a_usable_auc(document):
    auc = measured_auc(document)
    assert auc is None or (auc.low is None and not auc.reaches_chance)
    assert chance_warning(document) == ""


def test_a_bare_number_is_a_value_without_interval():
    auc = measured_auc({"performance": {"metrics": {"roc_auc": 0.7}}})
    assert (auc.value, auc.low, auc.high) == (0.7, None, None) and auc.text() == "0.700"


def test_the_cards_model_selection_reads_as_a_sentence_not_a_dict():
    from asdesk.core.performance import selection_text

    card = {"configurations_tried": 3, "note": "the rule was written down before the last six folds."}
    assert selection_text(card) == "3 configurations tried on these patients. the rule was written down before " \
                                   "the last six folds."
    assert selection_text({"configurations_tried": 1}) == "1 configuration tried on these patients."
    assert selection_text("best of three runs") == "best of three runs"
    assert selection_text(None) == selection_text({}) == ""
    assert "{" not in selection_text(card)
