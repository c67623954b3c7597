"""A campaign's state in plain words."""

from ._common import ROI_CV_FOLDS


def summary_words(campaign):
    """``campaign.status()`` in plain words, one line per fact (``Campaign.summary``)."""
    s = campaign.status()
    lines = [f"Campaign {campaign.folder}: {s['n_labelled']} of {s['n_pool']} images labelled "
             f"({s['n_with_roi']} with an ROI) in {s['rounds']} round(s).",
             "Per class: " + ", ".join(f"{c} {k}" for c, k in s["per_class"].items()) + ".",
             f"Query strategy: {campaign._strategy()[2]}."]
    warm = campaign.config.get("pretrain")
    if warm:
        lines.append(f"Warm start: {warm['method']}, {warm['epochs']} epochs on "
                     f"{warm['n_images']} pool images ({warm['when']}); every training "
                     "since starts from it.")
    if campaign.config.get("roi_model"):
        q = s["roi_model"]
        if q is None:
            lines.append("ROI model: not trained yet (it needs at least "
                         f"{2 * ROI_CV_FOLDS} labelled images with an ROI); until then "
                         "pool images without an ROI of their own rank by uncertainty.")
        elif q["dice"] is None:
            lines.append(f"ROI model: trained on {q['n']} annotated images, none with a "
                         "lesion, so its quality cannot be judged yet.")
        else:
            lines.append(f"ROI model: {q['folds']}-fold cross-validated on the {q['n']} "
                         f"labelled images with an ROI annotation ({q['n_lesion']} with a "
                         f"lesion), it draws the expert's ROI with Dice {q['dice']:.2f} "
                         f"and pixel roi_auc {q['roi_auc']:.2f} (chance 0.5).")
    if s["pending"]:
        lines.append("Waiting for labels: " + ", ".join(
            f"batch {b:03d} ({k} images)" for b, k in sorted(s["pending"].items())) + ".")
    else:
        lines.append("No batch is waiting for labels.")
    if s["n_waiting"]:
        lines.append(f"Live labels: {s['n_waiting']} change(s) from Label Studio wait for the "
                     "next training (xal campaign serve retrains by itself; xal campaign "
                     "retrain trains on them now).")
    if s["agreement_last"] is None:
        lines.append("Model estimate: none yet (it needs a round of labels to train on "
                     "and a next batch to be judged on).")
    else:
        lines.append(f"Model estimate: the expert agreed with the model's pre-annotated "
                     f"class on {s['agreement_last']:.0%} of the last imported batch "
                     f"({s['agreement_all']:.0%} over all judged batches); those images "
                     "were unseen by the model when it predicted them.")
    return "\n".join(lines)
