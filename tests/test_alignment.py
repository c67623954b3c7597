import numpy as np
import pytest

from xal_sklearn import dice, iou, pointing_game, soft_dice


def _case():
    maps = np.zeros((4, 4, 4))
    masks = np.zeros((4, 4, 4), dtype=np.uint8)
    # sample 0: map 1.0 on 2 pixels, 0.5 on 2 pixels; mask covers 3 pixels, 2 of them at 1.0
    maps[0, 0, 0] = maps[0, 0, 1] = 1.0
    maps[0, 3, 3] = maps[0, 3, 2] = 0.5
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 1] = 255
    # sample 1: empty mask -> undefined
    maps[1] = 0.7
    # sample 2: blank map, non-empty mask
    masks[2, 2, 2] = 1
    # sample 3: perfect overlap
    maps[3, 1:3, 1:3] = 1.0
    masks[3, 1:3, 1:3] = 1
    return maps, masks


def test_soft_dice_hand_computed():
    maps, masks = _case()
    got = soft_dice(maps, masks)
    # sample 0: 2 * (1 + 1) / (3 + 3) = 2/3
    assert got[0] == pytest.approx(2 / 3)
    assert np.isnan(got[1])
    assert got[2] == 0.0
    assert got[3] == pytest.approx(1.0)


def test_dice_and_iou_hand_computed():
    maps, masks = _case()
    d = dice(maps, masks, threshold=0.5)
    # sample 0 binarised: 4 pixels on, mask 3, overlap 2 -> dice 4/7, iou 2/5
    assert d[0] == pytest.approx(4 / 7)
    assert iou(maps, masks, threshold=0.5)[0] == pytest.approx(2 / 5)
    assert dice(maps, masks, threshold=0.9)[0] == pytest.approx(2 * 2 / 5)
    assert iou(maps, masks, threshold=0.9)[0] == pytest.approx(2 / 3)
    for f in (dice, iou):
        out = f(maps, masks)
        assert np.isnan(out[1]) and out[2] == 0.0 and out[3] == pytest.approx(1.0)


def test_pointing_game_hand_computed():
    maps, masks = _case()
    got = pointing_game(maps, masks)
    assert got[0] == 1.0  # first maximum (0, 0) lies in the mask
    assert np.isnan(got[1])
    assert got[2] == 0.0  # a blank map points nowhere
    assert got[3] == 1.0
    maps[0, 2, 2] = 2.0
    assert pointing_game(maps, masks)[0] == 0.0


def test_mask_encodings_agree():
    maps, masks = _case()
    as_bool = soft_dice(maps, masks > 0)
    as_01 = soft_dice(maps, (masks > 0).astype(np.float32))
    as_255 = soft_dice(maps, (masks > 0).astype(np.uint8) * 255)
    np.testing.assert_array_equal(as_bool, as_01)
    np.testing.assert_array_equal(as_bool, as_255)


def test_channel_axis_and_shape_errors():
    maps, masks = _case()
    np.testing.assert_array_equal(soft_dice(maps, masks[:, None]), soft_dice(maps, masks))
    with pytest.raises(ValueError, match="shape"):
        soft_dice(maps, masks[:, :3])
    with pytest.raises(ValueError, match="negative"):
        soft_dice(maps, -np.ones_like(maps))


def test_3d_volumes():
    maps = np.zeros((2, 3, 4, 4))
    masks = np.zeros((2, 3, 4, 4), bool)
    maps[0, 1, 1, 1] = 1.0
    masks[0, 1, 1, 1] = True
    np.testing.assert_allclose(soft_dice(maps, masks), [1.0, np.nan])
