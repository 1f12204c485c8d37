//! The wire form of Graph alert evidence (`alertEvidence` and its subtypes): one union of
//! the fields the mapping reads, every kind filling its own subset, parsed leniently.

use serde::Deserialize;

use super::super::lenient::{Nest, Num, Seq, Str};

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(crate) struct UserAccount<'a> {
    #[serde(default, rename = "accountName")]
    pub account_name: Str<'a>,
    #[serde(default, rename = "domainName")]
    pub domain: Str<'a>,
    #[serde(default, rename = "userSid")]
    pub sid: Str<'a>,
    #[serde(default, rename = "azureAdUserId")]
    pub aad_id: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    pub upn: Str<'a>,
    #[serde(default, rename = "displayName")]
    pub display_name: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(super) struct FileDetails<'a> {
    #[serde(default, rename = "fileName")]
    pub(super) name: Str<'a>,
    #[serde(default, rename = "filePath")]
    pub(super) path: Str<'a>,
    #[serde(default, rename = "fileSize")]
    pub(super) size: Num,
    #[serde(default)]
    pub(super) sha1: Str<'a>,
    #[serde(default)]
    pub(super) sha256: Str<'a>,
    #[serde(default)]
    pub(super) md5: Str<'a>,
    #[serde(default, rename = "filePublisher")]
    pub(super) publisher: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(super) struct IpLocation<'a> {
    #[serde(default)]
    pub(super) city: Str<'a>,
    #[serde(default, rename = "countryName")]
    pub(super) country_name: Str<'a>,
    #[serde(default)]
    pub(super) state: Str<'a>,
    #[serde(default)]
    pub(super) latitude: Num,
    #[serde(default)]
    pub(super) longitude: Num,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(super) struct Sender<'a> {
    #[serde(default, rename = "emailAddress")]
    pub(super) email: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(super) struct AccountWrap<'a> {
    #[serde(default, rename = "userAccount")]
    pub(super) user_account: Nest<UserAccount<'a>>,
}

/// Union of the evidence fields used; every kind fills its own subset.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(super) struct Item<'a> {
    #[serde(default, rename = "@odata.type")]
    pub(super) odata_type: Str<'a>,
    #[serde(default, rename = "createdDateTime")]
    pub(super) created: Str<'a>,
    #[serde(default)]
    pub(super) verdict: Str<'a>,
    #[serde(default, rename = "remediationStatus")]
    pub(super) remediation_status: Str<'a>,
    #[serde(default, rename = "remediationStatusDetails")]
    pub(super) remediation_details: Str<'a>,
    #[serde(default)]
    pub(super) roles: Seq<Str<'a>>,
    #[serde(default, rename = "detailedRoles")]
    pub(super) detailed_roles: Seq<Str<'a>>,
    #[serde(default)]
    pub(super) tags: Seq<Str<'a>>,
    #[serde(default, rename = "detectionStatus")]
    pub(super) detection_status: Str<'a>,
    #[serde(default, rename = "userAccount")]
    pub(super) user_account: Nest<UserAccount<'a>>,
    #[serde(default, rename = "ipAddress")]
    pub(super) ip: Str<'a>,
    #[serde(default, rename = "countryLetterCode")]
    pub(super) country: Str<'a>,
    #[serde(default)]
    pub(super) location: Nest<IpLocation<'a>>,
    #[serde(default, rename = "mdeDeviceId")]
    pub(super) mde_device_id: Str<'a>,
    #[serde(default, rename = "azureAdDeviceId")]
    pub(super) aad_device_id: Str<'a>,
    #[serde(default, rename = "deviceDnsName")]
    pub(super) dns_name: Str<'a>,
    #[serde(default, rename = "hostName")]
    pub(super) host_name: Str<'a>,
    #[serde(default, rename = "ntDomain")]
    pub(super) nt_domain: Str<'a>,
    #[serde(default, rename = "dnsDomain")]
    pub(super) dns_domain: Str<'a>,
    #[serde(default, rename = "osPlatform")]
    pub(super) os_platform: Str<'a>,
    #[serde(default, rename = "osBuild")]
    pub(super) os_build: Str<'a>,
    #[serde(default)]
    pub(super) version: Str<'a>,
    #[serde(default, rename = "riskScore")]
    pub(super) risk_score: Str<'a>,
    #[serde(default, rename = "healthStatus")]
    pub(super) health_status: Str<'a>,
    #[serde(default, rename = "rbacGroupName")]
    pub(super) rbac_group: Str<'a>,
    #[serde(default, rename = "lastIpAddress")]
    pub(super) last_ip: Str<'a>,
    #[serde(default, rename = "lastExternalIpAddress")]
    pub(super) last_external_ip: Str<'a>,
    #[serde(default, rename = "processId")]
    pub(super) pid: Num,
    #[serde(default, rename = "parentProcessId")]
    pub(super) ppid: Num,
    #[serde(default, rename = "processCommandLine")]
    pub(super) cmd_line: Str<'a>,
    #[serde(default, rename = "processCreationDateTime")]
    pub(super) process_created: Str<'a>,
    #[serde(default, rename = "parentProcessCreationDateTime")]
    pub(super) parent_created: Str<'a>,
    #[serde(default, rename = "imageFile")]
    pub(super) image_file: Nest<FileDetails<'a>>,
    #[serde(default, rename = "parentProcessImageFile")]
    pub(super) parent_image_file: Nest<FileDetails<'a>>,
    #[serde(default, rename = "fileDetails")]
    pub(super) file_details: Nest<FileDetails<'a>>,
    #[serde(default)]
    pub(super) url: Str<'a>,
    #[serde(default, rename = "primaryAddress")]
    pub(super) primary_address: Str<'a>,
    #[serde(default)]
    pub(super) upn: Str<'a>,
    #[serde(default, rename = "displayName")]
    pub(super) display_name: Str<'a>,
    #[serde(default, rename = "appId")]
    pub(super) app_id: Str<'a>,
    #[serde(default, rename = "servicePrincipalName")]
    pub(super) sp_name: Str<'a>,
    #[serde(default, rename = "servicePrincipalObjectId")]
    pub(super) sp_object_id: Str<'a>,
    #[serde(default, rename = "networkMessageId")]
    pub(super) network_message_id: Str<'a>,
    #[serde(default, rename = "internetMessageId")]
    pub(super) internet_message_id: Str<'a>,
    #[serde(default)]
    pub(super) subject: Str<'a>,
    #[serde(default, rename = "senderIp")]
    pub(super) sender_ip: Str<'a>,
    #[serde(default, rename = "recipientEmailAddress")]
    pub(super) recipient: Str<'a>,
    #[serde(default, rename = "p1Sender")]
    pub(super) p1_sender: Nest<Sender<'a>>,
    #[serde(default, rename = "p2Sender")]
    pub(super) p2_sender: Nest<Sender<'a>>,
    #[serde(default)]
    pub(super) urls: Seq<Str<'a>>,
    #[serde(default)]
    pub(super) threats: Seq<Str<'a>>,
    #[serde(default, rename = "deliveryAction")]
    pub(super) delivery_action: Str<'a>,
    #[serde(default, rename = "deliveryLocation")]
    pub(super) delivery_location: Str<'a>,
    #[serde(default, rename = "antiSpamDirection")]
    pub(super) anti_spam_direction: Str<'a>,
    #[serde(default, rename = "attachmentsCount")]
    pub(super) attachments_count: Num,
    #[serde(default)]
    pub(super) account: Nest<AccountWrap<'a>>,
    #[serde(default, rename = "sessionId")]
    pub(super) session_id: Str<'a>,
    #[serde(default, rename = "userAgent")]
    pub(super) user_agent: Str<'a>,
}
