"""A tiny synthetic tree in the VSPW_480p layout, for tests."""
import os
import os.path as osp

import cv2
import numpy as np

#: split -> {video: number of frames}
DEFAULT_VIDEOS = dict(
    train={'1_train_a': 6, '2_train_b': 5},
    val={'10_val_a': 20, '11_val_b': 18},
    test={'20_test_a': 4})


def make_vspw_tree(root, videos=None, size=(24, 32), seed=0):
    """Write ``root/{split}.txt`` and ``root/data/{video}/{origin,mask}``.

    Each video shows two rectangles of random classes (mask values 1..124)
    moving one pixel per frame over "others" (0), with a void (255) border
    row; test videos have no masks. Frames are named ``%08d``.

    Returns:
        dict: split -> {video: [mask arrays]} (empty lists for test).
    """
    videos = videos or DEFAULT_VIDEOS
    rng = np.random.RandomState(seed)
    h, w = size
    out = {}
    for split, vids in videos.items():
        with open(osp.join(root, f'{split}.txt'), 'w') as f:
            f.write(''.join(f'{v}\n' for v in vids))
        out[split] = {}
        for video, num in vids.items():
            origin = osp.join(root, 'data', video, 'origin')
            os.makedirs(origin, exist_ok=True)
            labelled = split != 'test'
            if labelled:
                os.makedirs(osp.join(root, 'data', video, 'mask'),
                            exist_ok=True)
            cls = rng.randint(1, 125, size=2)
            masks = []
            for t in range(num):
                mask = np.zeros((h, w), np.uint8)
                mask[2:h // 2, 2 + t % (w // 2):w // 2 + t % (w // 2)] = cls[0]
                mask[h // 2:h - 2, 4:w - 4] = cls[1]
                mask[0] = 255
                img = (rng.rand(h, w, 3) * 40).astype(np.uint8)
                img += (mask[..., None].astype(np.uint16) * 7 % 200).astype(
                    np.uint8)
                name = f'{t:08d}'
                cv2.imwrite(osp.join(origin, name + '.jpg'), img)
                if labelled:
                    cv2.imwrite(
                        osp.join(root, 'data', video, 'mask', name + '.png'),
                        mask)
                    masks.append(mask)
            out[split][video] = masks
    return out
