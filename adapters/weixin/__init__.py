"""The callback protocol that WeChat Official Accounts (``adapters/wechat``) and WeCom applications
(``adapters/wecom``) share, written once: Weixin (微信) is the name both products carry.

Both platforms sign their callbacks with SHA-1 over a token, encrypt them with the same AES scheme
(Tencent's "WXBizMsgCrypt"), wrap them in the same XML and hand out access tokens the same way; only
what the callbacks mean and how replies go out differ, and that stays in each platform's folder.
This is not a platform: the registry has no field for it.
"""
