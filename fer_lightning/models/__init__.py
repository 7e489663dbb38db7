"""Networks (scratch CNNs, timm backbones) and the LightningModule that trains them."""
