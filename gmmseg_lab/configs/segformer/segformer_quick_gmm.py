# GMMSeg twin of segformer_quick_softmax.py: the same network, data, schedule and seed;
# only the decode head's softmax classifier is replaced by the GMM classifier
# (gmmseg_lab.models.gmm_head; the settings are the paper's, see gmmseg-method.md).
_base_ = ['./segformer_quick_softmax.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='GMMSegHead',
        head={{_base_.model.decode_head}},
        num_components=5,
        embed_dim=64,
        loss_component_weight=0.01,
        update_correct_only=True,
        gmm_cfg=dict(
            e_step='sinkhorn',
            memory='fifo',
            memory_size=200,
            samples_per_component=20,
            update_interval=5,
            mean_momentum=0.999,
            std_momentum=0.0,
            sinkhorn_iters=3,
            sinkhorn_epsilon=0.05,
            var_floor=0.01)))
